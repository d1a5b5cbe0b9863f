"""``edgenas proxies``: list the zero-shot proxies and run the correlation study (thin over the API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from edgenas.errors import EdgenasError

if TYPE_CHECKING:
    from rich.console import Console

    from edgenas.estimators.proxies.study import StudyResult


def register(app: typer.Typer) -> None:
    """Add the ``proxies`` command group to the main app."""
    group = typer.Typer(help="Zero-shot (training-free) accuracy proxies.", no_args_is_help=True)
    group.command("list")(list_command)
    group.command("correlate")(correlate_command)
    app.add_typer(group, name="proxies")


def list_command() -> None:
    """List the proxies (usable as --estimator proxy:NAME) with what they need."""
    from rich.console import Console
    from rich.table import Table

    from edgenas.estimators.proxies import DEFAULT_MEMBERS, PROXIES

    table = Table("proxy", "scores", "needs", "source")
    for p in PROXIES.values():
        needs = [w for w, flag in (("labels", p.needs_labels), ("batch norm", p.needs_bn)) if flag]
        if p.min_batch > 1:
            needs.append(f"batch >= {p.min_batch}")
        table.add_row(p.name, p.summary, ", ".join(needs) or "-", p.citation.split(";")[-1].strip())
    table.add_row("ensemble", f"mean-rank vote of {', '.join(DEFAULT_MEMBERS)} (or proxy:a+b+c)", "-",
                  "rank aggregation")
    Console().print(table)


def correlate_command(
    space: str = typer.Option(..., help="search space (nb201, mbv3-tiny, ... or module:attr)"),
    data: str | None = typer.Option(
        None, help="images for the batch (digits, npz:PATH, ...); nb201 default: npz:$EDGENAS_DATA/cifar10"
    ),
    archs: int = typer.Option(100, help="architectures in the seeded sample"),
    batch: int = typer.Option(64, help="images in the one batch every proxy sees"),
    seed: int = typer.Option(0, help="seed of the sample, the batch and the initialisation"),
    proxies: str = typer.Option("all", help="comma-separated proxies, or 'all'"),
    ensemble: str = typer.Option("ensemble", help="members of the vote as a+b+c, 'ensemble' for the "
                                 "default members, or 'none'"),
    accuracy: str = typer.Option("auto", help="ground truth: auto (nb201: table, else train), table, train"),
    epochs: int = typer.Option(3, help="training epochs per architecture when the accuracy is trained"),
    max_train: int | None = typer.Option(None, help="train on at most this many images"),
    time_every: int = typer.Option(10, help="also score every k-th architecture proxy by proxy (timing)"),
    standalone: bool = typer.Option(False, help="score every proxy on its own (no shared pass)"),
    grasp_hvp: str = typer.Option("exact", help="GraSP's Hessian-vector product: exact (double backward) or "
                                  "frozen (a forward difference with the activation pattern frozen: ~3x "
                                  "faster, approximate; see docs/proxies.md)"),
    out: str | None = typer.Option(None, help="output folder (default runs/proxies/SPACE-seedS-nN)"),
    bench_data: str | None = typer.Option(None, help="reference-data folder (default $EDGENAS_DATA)"),
    threads: int = typer.Option(1, help="torch threads"),
    time_limit: float | None = typer.Option(None, help="stop scoring after this many minutes and report the "
                                            "architectures scored so far (run again to resume)"),
    shard: str | None = typer.Option(None, help="K/N: score only the architectures whose index is K mod N; run N "
                                     "such processes on one --out folder, then once without --shard"),
    workers: int = typer.Option(1, help="score on this many Ray workers (one CPU each; shards of one checkpoint)"),
    ray_address: str | None = typer.Option(None, help="join this Ray cluster (its nodes must share --out); "
                                           "default: $RAY_ADDRESS, else a local one"),
) -> None:
    """Rank correlation (Spearman, Kendall) of every proxy with real accuracy on a seeded sample."""
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from edgenas.estimators.proxies import DEFAULT_MEMBERS, ENSEMBLE, PROXIES, get_proxy, parse_members
    from edgenas.estimators.proxies.grasp import HVP_METHODS
    from edgenas.estimators.proxies.study import PUBLISHED_NB201, StudySettings, run_study
    from edgenas.evaluators import EvalContext
    from edgenas.spaces import get_space

    torch.set_num_threads(threads)
    shard_kn = _parse_shard(shard)
    if workers < 1:
        raise EdgenasError(f"--workers must be a positive number of parallel scorers, got {workers}")
    names = tuple(PROXIES) if proxies == "all" else tuple(p.strip() for p in proxies.split(",") if p.strip())
    for name in names:
        get_proxy(name)
    if grasp_hvp not in HVP_METHODS:
        raise EdgenasError(f"unknown --grasp-hvp '{grasp_hvp}'; use one of {', '.join(HVP_METHODS)}")
    members: tuple[str, ...] = ()
    if ensemble != "none":
        members = DEFAULT_MEMBERS if ensemble == ENSEMBLE else parse_members(ensemble)
        names = names + tuple(m for m in members if m not in names)
    resolved_space = get_space(space)
    if data is None:
        if resolved_space.name == "nb201":
            folder = EvalContext(space=resolved_space, bench_data=bench_data).shared_data_dir()
            data = f"npz:{folder.rstrip('/')}/cifar10"
        else:
            data = "digits"
    settings = StudySettings(space=space, data=data, archs=archs, batch=batch, seed=seed, proxies=names,
                             ensemble=members, share=not standalone, time_every=time_every,
                             accuracy=accuracy, epochs=epochs, max_train=max_train, grasp_hvp=grasp_hvp)
    folder = out or f"runs/proxies/{resolved_space.name}-seed{seed}-n{archs}"
    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"scoring {archs} architectures", total=archs)
        result = run_study(settings, folder, bench_data,
                           progress=lambda done, total, key: bar.update(task, completed=done),
                           time_limit=None if time_limit is None else 60 * time_limit, shard=shard_kn,
                           workers=workers, ray_address=ray_address)
    _print_table(console, result, PUBLISHED_NB201 if resolved_space.name == "nb201" else {})
    partial = result.figures.get("_partial")
    if partial:
        console.print(f"[yellow]partial[/]: the time limit stopped the study after {partial['scored']} of "
                      f"{partial['asked']} architectures; run the same command again to resume")
    console.print(f"results: {folder}/study.json, plots: {folder}/plots/")


def _print_table(console: Console, result: StudyResult, published: dict[str, float]) -> None:
    from rich.table import Table

    figures = result.figures
    table = Table("proxy", "Spearman rho", "Kendall tau", "non-finite", "s / arch",
                  *(["published |rho|"] if published else []),
                  title=f"{len(result.records)} architectures of {result.settings.space}")
    for name, fig in figures.items():
        if name.startswith("_"):
            continue
        row = [name, f"{fig['spearman']:.3f}", f"{fig['kendall']:.3f}", str(fig["nonfinite"]),
               f"{fig['seconds_per_arch']:.2f}"]
        if published:
            row.append(f"{published[name]:.2f}" if name in published else "-")
        table.add_row(*row)
    console.print(table)
    t = figures.get("_timing", {})
    console.print(
        f"all proxies of one architecture: {t.get('all_proxies_as_run_mean', float('nan')):.2f} s as run, "
        f"{t.get('all_proxies_standalone_sum_of_means', float('nan')):.2f} s proxy by proxy"
    )


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        k, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise EdgenasError(f"--shard takes K/N (e.g. 0/2), got '{shard}'") from None
    return k, n

