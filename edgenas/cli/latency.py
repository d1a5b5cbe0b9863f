"""``edgenas latency profile|fit|eval|devices``, ``edgenas roofline`` and ``edgenas accelerator``: thin wrappers
over the hardware API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

latency_app = typer.Typer(help="Latency models of a device: layer tables, predictors, fidelity.",
                          no_args_is_help=True)


def _classes(data: str | None, classes: int | None, in_channels: int | None) -> tuple[int, int]:
    """Classes and input channels: explicit options, else those of --data, else 10 and 3."""
    if data:
        from edgenas.data import load_dataset

        d = load_dataset(data)
        return classes or d.num_classes, in_channels or d.in_channels
    return classes or 10, in_channels or 3


def _progress(label: str):  # noqa: ANN202 - a tiny closure
    t0 = time.time()
    last = [0.0]

    def report(*args: object) -> None:
        done, total = args[-2], args[-1]
        what = args[0] if len(args) == 3 else label
        now = time.time()
        if now - last[0] > 5 or done == total:
            last[0] = now
            typer.echo(f"{what}: {done}/{total}  ({now - t0:.0f} s)", err=True)

    return report


@latency_app.command("profile")
def profile(
    out: Path = typer.Option(..., "--out", help="Where to write the latency table (JSON)."),
    space: str = typer.Option("mbv3-tiny", help="An MBV3-style space (mbv3, mbv3-tiny)."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime | torch."),
    threads: int = typer.Option(1, help="Threads used by the measured runtime."),
    data: str = typer.Option(None, help="Data set whose classes / channels the networks have (default 10 / 3)."),
    classes: int = typer.Option(None, help="Number of classes (overrides --data)."),
    in_channels: int = typer.Option(None, help="Input channels (overrides --data)."),
    calibrate: int = typer.Option(20, help="Whole networks measured to calibrate the layer sum."),
    seed: int = typer.Option(0, help="Seed of the calibration networks."),
) -> None:
    """Measure every distinct layer of SPACE on this machine (resumable: re-run the same command)."""
    from edgenas.hardware.lut import profile_lut
    from edgenas.hardware.measure import MeasureSettings
    from edgenas.spaces import get_space

    nc, ic = _classes(data, classes, in_channels)
    rep = profile_lut(get_space(space), out, MeasureSettings(backend=backend, threads=threads), nc, ic,
                      calibrate=calibrate, seed=seed, progress=_progress("profile"))
    c = rep.calibration
    typer.echo(f"wrote {out}: {rep.layers} layers ({rep.resumed} resumed), {rep.networks} calibration networks, "
               f"{rep.seconds:.0f} s; latency ~ {c.a:.3f} x sum {c.b:+.4f} ms x layers {c.c:+.4f} ms "
               f"(training MAPE {c.train_mape or 0:.1f}%)")


def _is_hat(space_obj) -> bool:  # noqa: ANN001
    from edgenas.spaces.transformer import HATSpace

    return isinstance(space_obj, HATSpace)


def _classes_for(space_obj, data: str | None, classes: int | None, in_channels: int | None) -> tuple[int, int]:  # noqa: ANN001
    """Classes and input channels of an image space's networks (a HAT space's --data is translation data)."""
    return (10, 3) if _is_hat(space_obj) else _classes(data, classes, in_channels)


def _measure_transformers(space_obj, n: int, measured_out: Path | None, threads: int, data: str | None,  # noqa: ANN001
                          seed: int) -> Path:
    """``--measure N`` on a HAT space: SubTransformers' translation latency, fresh process each, into a
    HAT-format CSV (what ``edgenas hat measure`` writes)."""
    from edgenas.errors import EdgenasError
    from edgenas.hardware.transformer_latency import TranslationTiming, collect_dataset
    from edgenas.translation_data import load_parallel

    target = measured_out or Path(f"measured_{space_obj.name}.csv")
    if target.suffix != ".csv":
        raise EdgenasError(f"--measured-out for a HAT space is a CSV in HAT's format, not '{target}'; give a .csv")
    words = load_parallel(data or "reverse")
    timing = TranslationTiming(src_vocab=words.src_vocab, tgt_vocab=words.tgt_vocab, threads=threads)
    typer.echo(f"measuring {n} SubTransformers here (translation latency), writing {target}", err=True)
    collect_dataset(space_obj, n, str(target), timing, seed, progress=lambda m: typer.echo(m, err=True))
    return target


def _dataset(space_obj, dataset: str | None, column: str | None, skip_invalid: bool, measure: int | None,
             measured_out: Path | None, backend: str, threads: int, nc: int, ic: int, seed: int,
             data_spec: str | None = None):  # noqa: ANN001, ANN202
    from edgenas.hardware.datasets import read_latency_dataset
    from edgenas.hardware.measure import MeasureSettings
    from edgenas.hardware.workflows import measure_random

    if (dataset is None) == (measure is None):
        from edgenas.errors import EdgenasError

        raise EdgenasError("give exactly one of --dataset PATH or --measure N")
    if measure is not None and _is_hat(space_obj):
        dataset = str(_measure_transformers(space_obj, int(measure), measured_out, threads, data_spec, seed))
    if dataset:
        data = read_latency_dataset(dataset, space_obj, column, "skip" if skip_invalid else "stop")
        if data.skipped:
            typer.echo(f"skipped {len(data.skipped)} invalid lines (first: {data.skipped[0]})", err=True)
        return data
    target = measured_out or Path(f"measured_{space_obj.name}.jsonl")
    typer.echo(f"measuring {measure} random architectures here, appending to {target}", err=True)
    return measure_random(space_obj, int(measure), target, MeasureSettings(backend=backend, threads=threads), nc,
                          ic, seed, _progress("measured"))


@latency_app.command("fit")
def fit(
    out: Path = typer.Option(..., "--out", help="Where to save the predictor (.npz)."),
    space: str = typer.Option("mbv3-tiny", help="Search space of the architectures."),
    dataset: str = typer.Option(None, help="JSONL (arch + latency_ms) or CSV of measured latencies."),
    column: str = typer.Option(None, help="Latency column of the dataset (e.g. titan_rtx_1, raspi4)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip invalid dataset lines (else stop)."),
    measure: int = typer.Option(None, help="Instead of --dataset: measure N random architectures here (HAT "
                                "spaces: SubTransformers' translation latency)."),
    measured_out: Path = typer.Option(None, help="JSONL to append measurements to (with --measure; a HAT "
                                      "space: a CSV in HAT's format)."),
    model: str = typer.Option("gbt", help="linear | gbt | mlp."),
    lut: str = typer.Option(None, help="A latency table whose sums become features."),
    holdout: int = typer.Option(0, help="Hold out the last N rows and report fidelity on them."),
    data: str = typer.Option(None, help="Data set of the networks (classes / channels; a HAT space: the "
                             "translation data whose vocabularies they get)."),
    classes: int = typer.Option(None),
    in_channels: int = typer.Option(None),
    backend: str = typer.Option("onnxruntime"),
    threads: int = typer.Option(1),
    seed: int = typer.Option(0, help="Seed of the measured architectures."),
) -> None:
    """Fit a network-wise latency predictor on measured (architecture, latency) pairs."""
    from edgenas.hardware.workflows import fit_latency_predictor
    from edgenas.spaces import get_space

    s = get_space(space)
    nc, ic = _classes_for(s, data, classes, in_channels)
    rows = _dataset(s, dataset, column, skip_invalid, measure, measured_out, backend, threads, nc, ic, seed, data)
    report = fit_latency_predictor(s, rows, model, lut, nc, ic, holdout, out)
    typer.echo(json.dumps(report, indent=1))


@latency_app.command("eval")
def evaluate(
    space: str = typer.Option("mbv3-tiny", help="Search space of the architectures."),
    lut: str = typer.Option(None, help="A latency table to evaluate."),
    predictor: str = typer.Option(None, help="A saved predictor to evaluate."),
    dataset: str = typer.Option(None, help="Held-out measurements: JSONL or CSV."),
    column: str = typer.Option(None, help="Latency column of the dataset."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid"),
    measure: int = typer.Option(None, help="Instead of --dataset: measure N random architectures here (HAT "
                                "spaces: SubTransformers' translation latency)."),
    measured_out: Path = typer.Option(None, help="JSONL to append measurements to (with --measure; a HAT "
                                      "space: a CSV in HAT's format)."),
    plot: Path = typer.Option(None, help="Write the predicted-vs-measured / residual-vs-order PNG here."),
    data: str = typer.Option(None),
    classes: int = typer.Option(None),
    in_channels: int = typer.Option(None),
    backend: str = typer.Option("onnxruntime"),
    threads: int = typer.Option(1),
    seed: int = typer.Option(1, help="Seed of the measured architectures (differs from fit's by default)."),
) -> None:
    """Fidelity of a latency table or predictor on held-out measured architectures."""
    from edgenas.hardware.workflows import check_table_settings, evaluate_latency_model, latency_model
    from edgenas.spaces import get_space

    s = get_space(space)
    if lut and measure:
        check_table_settings(lut, backend, threads)
    nc, ic = _classes_for(s, data, classes, in_channels)
    hat = _is_hat(s)
    predict = latency_model(s, lut, predictor, nc if (data or classes) and not hat else None,
                            ic if (data or in_channels) and not hat else None)
    rows = _dataset(s, dataset, column, skip_invalid, measure, measured_out, backend, threads, nc, ic, seed, data)
    report = evaluate_latency_model(predict, rows, plot, f"{lut or predictor} on {rows.source}")
    typer.echo(json.dumps(report, indent=1))


@latency_app.command("devices")
def devices() -> None:
    """List the shipped device profiles (peak compute, bandwidth, table / predictor) and accelerator models."""
    from rich.console import Console
    from rich.table import Table

    from edgenas.hardware.devices import list_devices, load_device

    table = Table("device", "peak (GOPS)", "bandwidth (GB/s)", "latency models")
    for name in list_devices():
        d = load_device(name)
        peaks = ", ".join(f"{k} {v:g}" for k, v in d.peak_gops.items()) or "-"
        models = [m for m, ok in (("lut", d.lut), ("predictor", d.predictor),
                                  (f"nb201:{d.nb201_column} (NB201 space)", d.nb201_column),
                                  ("roofline", d.peak_gops and d.memory_bandwidth_gbs)) if ok]
        table.add_row(name, peaks, f"{d.memory_bandwidth_gbs or '-'}", ", ".join(models) or "-")
    console = Console()
    console.print(table)
    from edgenas.hardware.accelerator import list_accelerators, load_accelerator

    accel = Table("accelerator", "PEs", "dataflow", "MHz", "KB", "GB/s", "mapping",
                  title="accelerator models (--target accel:NAME; edgenas accelerator ARCH.json)")
    for name in list_accelerators():
        a = load_accelerator(name)
        accel.add_row(name, f"{a.pe_rows}x{a.pe_cols}", a.dataflow, f"{a.clock_mhz:g}", f"{a.buffer_kb:g}",
                      f"{a.dram_gbs:g}", a.mapping)
    console.print(accel)


def roofline(
    arch_file: Path = typer.Argument(..., help="JSON file with an architecture (or an exported model's .json)."),
    device: str = typer.Option(..., "--device", help="A device profile name (edgenas latency devices) or YAML."),
    space: str = typer.Option("mbv3-tiny", help="Search space of the architecture."),
    precision: str = typer.Option(None, help="fp32 | fp16 | int8 (default: the device's)."),
    out: Path = typer.Option(Path("roofline.png"), "--out", help="Where to draw the roofline (PNG)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the per-op table as JSON."),
    data: str = typer.Option(None),
    classes: int = typer.Option(None),
    in_channels: int = typer.Option(None),
) -> None:
    """Roofline of one architecture on a device: per-op intensity and attainable performance, and memory."""
    from edgenas.export import load_arch_json
    from edgenas.hardware.workflows import roofline_report
    from edgenas.io import atomic_write_json
    from edgenas.spaces import get_space

    s = get_space(space)
    nc, ic = _classes(data, classes, in_channels)
    rep = roofline_report(s, load_arch_json(arch_file), device, precision, nc, ic, out)
    if json_out:
        atomic_write_json(json_out, rep)
    r, m = rep["roofline"], rep["memory"]
    typer.echo(
        f"{r['device']} ({r['precision']}): {r['flops'] / 1e6:.2f} MFLOP, {r['bytes'] / 1e6:.3f} MB moved, "
        f"intensity {r['intensity']:.2f} op/B (ridge {r['ridge_intensity']:.2f}), {r['memory_bound_ops']}/{r['ops']} "
        f"ops memory-bound; latency >= {r['time_ms_lower_bound']:.4f} ms, {r['attained_gops']:.3g} GOPS "
        f"({r['utilization'] * 100:.1f}% of peak); params {m['param_bytes'] / 1e3:.1f} kB"
        + (f", peak activations {m['peak_activation_bytes'] / 1e3:.1f} kB at {m['peak_at']}"
           if "peak_activation_bytes" in m else "")
        + f"; plot: {out}"
    )


def accelerator(
    arch_file: Path = typer.Argument(..., help="JSON file with an architecture (or an exported model's .json)."),
    accel: str = typer.Option("eyeriss", "--accelerator", help="A preset (eyeriss, nvdla-small, shidiannao) or YAML."),
    space: str = typer.Option("mbv3-tiny", help="Search space of the architecture."),
    mapping: str = typer.Option(None, help="searched (the best loop order and tiling per layer, NAAS's compiler "
                                "mapping) | fixed; default: the accelerator's."),
    top: int = typer.Option(10, help="Show this many layers, the slowest first (0: all)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the per-layer table and totals as JSON."),
    data: str = typer.Option(None),
    classes: int = typer.Option(None),
    in_channels: int = typer.Option(None),
) -> None:
    """One architecture on the analytical accelerator model: per-layer cycles, utilisation, DRAM traffic,
    bound and latency, and the totals on every shipped preset for comparison."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from edgenas.export import load_arch_json
    from edgenas.hardware.accelerator import list_accelerators, load_accelerator, network_cost
    from edgenas.hardware.roofline import arch_ops
    from edgenas.io import atomic_write_json
    from edgenas.spaces import get_space

    s = get_space(space)
    nc, ic = _classes(data, classes, in_channels)
    acc = load_accelerator(accel)
    acc = acc.with_(mapping=mapping) if mapping else acc
    ops = arch_ops(s, load_arch_json(arch_file), nc, ic)
    layers, total = network_cost(acc, ops)
    table = Table(title=f"{acc.name}: {acc.pe_rows}x{acc.pe_cols} PEs, {acc.dataflow}, {acc.clock_mhz:g} MHz, "
                        f"{acc.buffer_kb:g} KB, {acc.dram_gbs:g} GB/s, {acc.mapping} mapping")
    for col in ("layer", "kind", "MACs", "cycles", "util.", "DRAM kB", "ms", "bound", "loop order, tiles"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "bound", "loop order, tiles") else "right",
                         overflow="fold", min_width=20 if col == "layer" else None)
    shown = sorted(layers, key=lambda c: -c.ms)[: top or None]
    for c in shown:
        table.add_row(c.name, c.kind, f"{c.macs:,}", f"{c.cycles:,.0f}", f"{c.utilisation * 100:.0f}%",
                      f"{c.dram_bytes / 1e3:.1f}", f"{c.ms:.4f}", c.bound, c.mapping)
    console = Console()
    console.print(table)
    others = {n: network_cost(load_accelerator(n).with_(**({"mapping": mapping} if mapping else {})), ops)[1]
              for n in list_accelerators()}
    console.print(f"total: {total['latency_ms']:.4f} ms, {total['macs'] / 1e6:.2f} M MACs, array utilisation "
                  f"{total['array_utilisation'] * 100:.1f}%, {total['dram_bytes'] / 1e3:.1f} kB from DRAM, "
                  f"{int(total['memory_bound_layers'])}/{len(layers)} layers memory-bound; energy "
                  f"{total['energy_uj']:.4g} (units of energy_pj x 1e-6)")
    console.print("presets: " + ", ".join(f"{n} {v['latency_ms']:.4f} ms" for n, v in others.items()))
    if json_out:
        atomic_write_json(json_out, {"accelerator": acc.to_dict(), "totals": total,
                                     "layers": [{**asdict(c), "ms": c.ms, "bound": c.bound} for c in layers],
                                     "presets": others})


def register(app: typer.Typer) -> None:
    """Add ``edgenas latency ...``, ``edgenas roofline`` and ``edgenas accelerator`` to the main app."""
    from edgenas.cli import kernels as _kernels

    _kernels.register(latency_app)
    app.add_typer(latency_app, name="latency")
    app.command("roofline")(roofline)
    app.command("accelerator")(accelerator)
