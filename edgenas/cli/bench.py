"""``edgenas bench nb201``: compare search strategies on NAS-Bench-201 (thin wrapper over
:mod:`edgenas.benchmarks.nb201`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from edgenas.benchmarks.nb201 import BenchSettings

bench_app = typer.Typer(help="Benchmark search strategies on tabular benchmarks.", no_args_is_help=True)


@bench_app.command("nb201")
def nb201(
    strategies: str = typer.Option("random,evolution,reinforce,tpe,nsga2",
                                   help="Comma-separated strategies, e.g. random,evolution,bo."),
    dataset: str = typer.Option("cifar10", help="cifar10 | cifar100 | imagenet16_120 (the oracle's data)."),
    budget: int = typer.Option(300, help="Accuracy queries per run (repeated architectures are free)."),
    seeds: int = typer.Option(20, help="Runs per strategy (seeds 0..N-1 from --first-seed)."),
    first_seed: int = typer.Option(0, help="First seed."),
    device: str = typer.Option(None, help="Device column of nb201_latency_ms.csv (e.g. raspi4)."),
    latency_ms: str = typer.Option(None, "--latency-ms",
                                   help="Latency constraint in ms on --device, or 'median' (that device's)."),
    objectives: str = typer.Option("accuracy", help="accuracy | accuracy,latency (reports the hypervolume)."),
    bench_data: str = typer.Option(None, help="Reference data folder (default $EDGENAS_DATA)."),
    out: Path = typer.Option(Path("nb201_bench.json"), help="Where to write the JSON summary."),
    plot: Path = typer.Option(None, help="Anytime-curve PNG (default: --out with .png)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run strategies x seeds against the NB201 table; print a table, write JSON and the anytime curves."""
    from rich.console import Console

    from edgenas.benchmarks.nb201 import BenchSettings, format_table, plot_curves, resolve_latency
    from edgenas.benchmarks.nb201_table import load_nb201
    from edgenas.errors import EdgenasError
    from edgenas.io import atomic_write_json, machine_info

    data = bench_data or os.environ.get("EDGENAS_DATA")
    if not data:
        raise EdgenasError("reference data not found: pass --bench-data PATH or set EDGENAS_DATA "
                           "(e.g. EDGENAS_DATA=../shared/data)")
    settings = BenchSettings(
        strategies=[s.strip() for s in strategies.split(",") if s.strip()],
        dataset=dataset, budget=budget, seeds=seeds, first_seed=first_seed, device=device,
        latency_ms=resolve_latency(load_nb201(data), device, latency_ms),
        objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()),
    )
    console = Console(stderr=True)
    summary = _run(settings, data, console, quiet)
    print(format_table(summary))
    summary["command"] = " ".join(["edgenas", *sys.argv[1:]])
    summary["machine"] = machine_info()
    atomic_write_json(out, summary)
    png = plot or out.with_suffix(".png")
    plot_curves(summary, str(png))
    console.print(f"wrote {out} and {png}")


def _run(settings: BenchSettings, data: str, console: Any, quiet: bool) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgenas.benchmarks.nb201 import run_benchmark

    total = len(settings.strategies) * settings.seeds
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("runs", total=total)

        def step(name: str, seed: int, trace: Any) -> None:
            progress.update(task, advance=1, description=f"{name} seed {seed}")

        return run_benchmark(settings, data, progress=step)


def register(app: typer.Typer) -> None:
    """Add ``edgenas bench`` to the main app."""
    app.add_typer(bench_app, name="bench")
