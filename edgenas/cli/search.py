"""``edgenas search``, ``edgenas report`` and ``edgenas export``: thin wrappers over the Python API."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from edgenas.errors import EdgenasError
from edgenas.estimators.options import ESTIMATOR_OPTIONS


def _parse_constraint(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("<=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise EdgenasError(f"a constraint is METRIC<=VALUE (e.g. params<=200000), got '{text}'") from None


def search(
    out: Path = typer.Option(..., "--out", help="Folder for the study, trials.csv, pareto.json and weights."),
    space: str = typer.Option(None, help="Search space name (see 'edgenas spaces') or module:attribute."),
    data: str = typer.Option(None, help="digits | npz:PATH | cifar10:PATH | folder:PATH | synthetic"),
    target: str = typer.Option(None, help="Device target for latency: cpu (measured here), lut:PATH, "
                                          "predictor:PATH, accel:NAME, a device name, ..."),
    estimator: str = typer.Option(
        None, help="Accuracy estimator: train, net2net (MobileNetV3 spaces), proxy:NAME, tabular:nb201, supernet:PATH"),
    strategy: str = typer.Option(None, help="random | grid | evolution | tpe | nsga2 | reinforce | bo | eas"),
    budget: int = typer.Option(None, help="Number of accuracy evaluations (default 20)."),
    latency_ms: float = typer.Option(None, "--latency-ms", help="Latency budget in ms on the target."),
    constraint: list[str] = typer.Option(None, "--constraint", help="Extra constraint METRIC<=VALUE (repeatable)."),
    objectives: str = typer.Option(
        None, help="Comma-separated metrics: accuracy, latency, params, flops, param_bytes, peak_memory, "
                   "energy (with --target accel:NAME), pes (codesign: spaces)."),
    estimator_option: list[str] = typer.Option(
        None, "--estimator-option",
        help="KEY=VALUE for the estimator (repeatable): " + "; ".join(
            f"{key}{'=' + '|'.join(allowed) if allowed else ''}: {text}"
            for key, (_, allowed, text) in ESTIMATOR_OPTIONS.items()) + "."),
    epochs: int = typer.Option(None, help="Training epochs per architecture (estimator 'train')."),
    seed: int = typer.Option(None, help="Seed of the strategy, weight init and batch order."),
    backend: str = typer.Option(None, help="Latency backend on cpu: onnxruntime | torch."),
    threads: int = typer.Option(None, help="Threads for latency measurement."),
    population: int = typer.Option(None, help="Population size (evolution, nsga2)."),
    workers: int = typer.Option(None, help="Accuracy evaluations at once (default 1); more than one run on Ray "
                                "actors, one CPU each (pip install 'edgenas[ray]')."),
    ray_address: str = typer.Option(None, "--ray-address",
                                    help="Join this running Ray cluster (default $RAY_ADDRESS, else start one here)."),
    max_train: int = typer.Option(None, help="Use only the first N training images."),
    bench_data: str = typer.Option(None, help="Reference data folder (default $EDGENAS_DATA)."),
    cache_dir: str = typer.Option(None, help="Latency cache folder (default OUT/cache)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search stored in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run a hardware-aware architecture search (resumable with --resume)."""
    from rich.console import Console

    from edgenas.experiment import ExperimentConfig

    given: dict[str, Any] = {
        "space": space, "data": data, "target": target, "estimator": estimator, "strategy": strategy,
        "budget": budget, "epochs": epochs, "seed": seed, "backend": backend, "threads": threads,
        "population_size": population, "max_train": max_train, "bench_data": bench_data, "cache_dir": cache_dir,
        "workers": workers, "ray_address": ray_address,
        "objectives": [o.strip() for o in objectives.split(",") if o.strip()] if objectives else None,
    }
    constraints: dict[str, float] = dict(_parse_constraint(c) for c in constraint or [])
    if latency_ms is not None:
        constraints["latency"] = latency_ms
    if constraints:
        given["constraints"] = constraints
    if estimator_option:
        from edgenas.estimators.options import parse_estimator_option

        given["estimator_options"] = dict(parse_estimator_option(o) for o in estimator_option)
    given = {k: v for k, v in given.items() if v is not None}
    if resume and (out / "config.json").exists():
        base = ExperimentConfig.load(out).to_json()
    else:
        base = {f.name: getattr(ExperimentConfig(out=str(out)), f.name) for f in fields(ExperimentConfig)}
    config = ExperimentConfig.from_json({**base, **given, "out": str(out)})
    console = Console(stderr=True)
    result = _run_with_progress(config, resume, console, quiet)
    console.print(f"[bold]{len(result.records)}[/] trials stored in [cyan]{out}[/] ({result.stopped_because}).")
    if result.best:
        from edgenas.evaluators import accuracy_label

        named = accuracy_label(config.estimator).removesuffix(" (%)")
        m = ", ".join(f"{named if k == 'accuracy' else k} {v:.4g}" for k, v in result.best.metrics.items())
        console.print(f"best: trial {result.best.number}: {m}")
    console.print(f"Pareto front: {len(result.front)} trials -> {out / 'pareto.json'}; "
                  f"next: edgenas report {out} ; edgenas export {out} --trial best --out model.onnx")


def _run_with_progress(config: Any, resume: bool, console: Any, quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgenas.experiment import Experiment

    experiment = Experiment(config)
    experiment.start(resume)  # bad input fails here, before the progress bar
    if quiet:
        return experiment.run()
    columns = [TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}")]
    from edgenas.evaluators import accuracy_label

    what = accuracy_label(config.estimator).removesuffix(" (%)")
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=config.budget)
        best = {"acc": float("-inf"), "infeasible": 0}

        def report(done: int, total: int, record: Any) -> None:
            if record.feasible:
                best["acc"] = max(best["acc"], record.metrics.get("accuracy", float("-inf")))
            else:
                best["infeasible"] += 1
            desc = f"best {what} {best['acc']:.4g}" if best["acc"] > float("-inf") else ""
            bar.update(task, completed=done, description=f"{desc}  infeasible {best['infeasible']}")

        return experiment.run(progress=report)


def report(out: Path = typer.Argument(..., help="A search's --out folder.")) -> None:
    """Write OUT/report.html with the Pareto plot and the progress curve."""
    from edgenas.report import write_report

    path = write_report(out)
    typer.echo(f"wrote {path}, {out / 'pareto.png'}, {out / 'progress.png'}")


def export(
    out: Path = typer.Argument(..., help="A search's --out folder."),
    trial: str = typer.Option("best", help="'best' or a trial number."),
    onnx: Path = typer.Option(None, "--out", help="ONNX file to write (default OUT/trialN.onnx)."),
) -> None:
    """Export a trial's network to ONNX and check onnxruntime against PyTorch."""
    from edgenas.export import export_trial

    r = export_trial(out, trial, onnx)
    how = "search weights" if r.reused_weights else "trained now"
    typer.echo(f"exported trial {r.trial} to {r.onnx_path} ({how}; accuracy {r.accuracy:.2f}%; "
               f"onnxruntime vs PyTorch max abs diff {r.max_abs_diff:.1e})")


def evaluate(
    arch_file: Path = typer.Argument(..., help="JSON file with an architecture (or an exported model's .json)."),
    space: str = typer.Option("mbv3-tiny", help="Search space of the architecture."),
    data: str = typer.Option("digits", help="Data set (for classes, channels and training)."),
    target: str = typer.Option(None, help="Device target for latency (e.g. cpu)."),
    estimator: str = typer.Option(None, help="Accuracy estimator (e.g. train); none by default."),
    epochs: int = typer.Option(2, help="Training epochs (estimator 'train')."),
    backend: str = typer.Option("onnxruntime", help="Latency backend on cpu."),
    threads: int = typer.Option(1, help="Threads for latency measurement."),
    seed: int = typer.Option(0),
) -> None:
    """Validate one architecture and print its metrics (params, MACs, latency, accuracy) as JSON."""
    import json

    from edgenas.evaluators import EvalContext, make_cost, make_estimator, make_target
    from edgenas.export import load_arch_json
    from edgenas.spaces import get_space

    s = get_space(space)
    arch = s.validate(load_arch_json(arch_file))
    ctx = EvalContext(space=s, data_spec=data, seed=seed, epochs=epochs, backend=backend, threads=threads)
    metrics: dict[str, float] = {}
    if s.builder:
        metrics.update(params=make_cost("params", ctx)(arch), flops=make_cost("flops", ctx)(arch))
    if target:
        metrics["latency"] = make_target(target, ctx)(arch)
    if estimator:
        metrics["accuracy"] = make_estimator(estimator, ctx)(arch)
    typer.echo(json.dumps({"space": s.name, "arch": arch, "metrics": metrics}, indent=1))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("search")(search)
    app.command("report")(report)
    app.command("export")(export)
    app.command("evaluate")(evaluate)
