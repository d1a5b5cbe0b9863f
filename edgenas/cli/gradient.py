"""``edgenas proxyless search`` and ``edgenas darts search``: thin wrappers over the gradient-based search API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

proxyless_app = typer.Typer(help="ProxylessNAS: binarized-path search with a latency loss (Cai et al., ICLR 2019).",
                            no_args_is_help=True)
darts_app = typer.Typer(help="DARTS: differentiable search by continuous relaxation (Liu et al., ICLR 2019).",
                        no_args_is_help=True)


def _candidates(text: str | None) -> list[list[int]] | None:
    """``k3e3,k5e6`` -> ``[[3, 3], [5, 6]]``."""
    from edgenas.errors import EdgenasError

    if not text:
        return None
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        try:
            k, e = p[1:].split("e")
            if not p.startswith("k"):
                raise ValueError
            out.append([int(k), int(e)])
        except ValueError:
            raise EdgenasError(f"a candidate is kKeE (e.g. k3e6), got '{part}'") from None
    return out


def _run(method: str, resume: bool, quiet: bool, **given: Any) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgenas.supernets.gradient_search import GradientSearch, GradientSearchConfig

    out = given["out"]
    base: dict[str, Any] = {}
    if resume and (Path(out) / "search.json").exists():
        import json

        base = json.loads((Path(out) / "search.json").read_text())
    defaults = GradientSearchConfig(out=str(out), method=method).to_json()
    values = {**defaults, **base, **{k: v for k, v in given.items() if v is not None}, "method": method,
              "out": str(out)}
    config = GradientSearchConfig.from_json(values)
    console = Console(stderr=True)

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    search = GradientSearch(config, None, log)  # bad input fails here, before any training
    search.start(resume)
    if quiet:
        result = search.run()
    else:
        columns = [TextColumn(f"[bold]{method}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}")]
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("", total=config.epochs * search.steps_per_epoch)

            def progress(done: int, total: int, row: dict[str, float]) -> None:
                desc = f"epoch {row['epoch']} loss {row['loss']:.3f}"
                if "expected_ms" in row:
                    desc += f" E\\[lat] {row['expected_ms']:.4f} ms"
                bar.update(task, completed=done, description=desc)

            search.progress = progress
            result = search.run()
    m = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    console.print(f"derived architecture -> [cyan]{out / 'arch.json'}[/] ({m})")
    console.print(f"plots: {out / 'alpha.png'}, {out / 'curves.png'}; next: edgenas export {out} --out model.onnx")


def _search_command(method: str):  # noqa: ANN202 - builds a Typer command
    def search(
        out: Path = typer.Option(..., "--out", help="Folder for arch.json, history, plots, checkpoint, store."),
        space: str = typer.Option(None, help="mbv3-tiny (default), mbv3, or nb201 (DARTS only)."),
        data: str = typer.Option(None, help="digits | npz:PATH | cifar10:PATH | folder:PATH | synthetic"),
        target: str = typer.Option(None, help="Latency table: cpu (profiled here, cached) or lut:PATH."),
        latency_ms: float = typer.Option(None, "--latency-ms", help="Latency target in ms on the target."),
        loss: str = typer.Option(None, help="Latency loss: additive (lambda*E/T) or multiplicative (log ratio^beta)."),
        lam: float = typer.Option(None, "--lambda", help="Initial lambda of the additive loss."),
        beta: float = typer.Option(None, help="Initial beta of the multiplicative loss."),
        adapt: float = typer.Option(None, help="Dual-ascent rate of lambda/beta towards E(lat) = target "
                                               "(0: the fixed published forms)."),
        constraint: str = typer.Option(None, help="equal (steer E(lat) to the target; the coefficient may turn "
                                                  "negative) or at-most (it never rewards latency)."),
        epochs: int = typer.Option(None, help="Epochs over the train split (default 8)."),
        warmup_epochs: int = typer.Option(None, "--warmup-epochs", help="Weight-only epochs first (default 2)."),
        batch_size: int = typer.Option(None, "--batch-size"),
        lr: float = typer.Option(None, help="Weight learning rate (SGD, cosine; default 0.03 proxyless, "
                                            "0.1 darts)."),
        arch_lr: float = typer.Option(None, "--arch-lr", help="Architecture learning rate (Adam)."),
        max_train: int = typer.Option(None, "--max-train", help="Use only the first N training images."),
        resolution: int = typer.Option(None, help="Input resolution of the search (MBV3; default the largest)."),
        width: float = typer.Option(None, help="Width multiplier (MBV3; default 1.0)."),
        candidates: str = typer.Option(None, help="Candidate ops per block, e.g. k3e3,k5e6 (default all)."),
        weight_sharing: str = typer.Option(None, "--weight-sharing",
                                           help="nested (the candidates of a block share one elastic block; "
                                                "proxyless default) or none (each candidate its own weights, "
                                                "the papers'; darts default)."),
        derive: str = typer.Option(None, help="window (most probable arch within (1 +- window) x target), "
                                               "budget (at most the target), argmax (the papers') or select "
                                               "(the best of --select-from archs drawn in the window, scored "
                                               "with the supernet's weights). --resume --derive X re-derives "
                                               "a finished search."),
        window: float = typer.Option(None, help="Half-width of the derivation window around the target (0.05)."),
        select_from: int = typer.Option(None, "--select-from", help="Candidates --derive select scores (16)."),
        arch_every: int = typer.Option(None, "--arch-every", help="One architecture step every N weight steps."),
        seed: int = typer.Option(None),
        threads: int = typer.Option(None, help="Torch threads for training and latency measurement."),
        cache_dir: str = typer.Option(None, "--cache-dir", help="Where --target cpu caches its table (OUT/cache)."),
        retrain_epochs: int = typer.Option(None, "--retrain-epochs", help="Epochs 'edgenas export' trains."),
        init_weights: str = typer.Option(None, "--init-weights",
                                         help="An earlier search's --out folder whose network weights start this "
                                              "one (share one warm-up: run it with --warmup-epochs = --epochs)."),
        zero_gamma: bool = typer.Option(None, "--zero-gamma/--no-zero-gamma",
                                        help="MBV3: start every residual candidate as the identity (zero-gamma "
                                             "batch norm; proxyless default on, darts off)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search in --out."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        _run(method, resume, quiet, out=out, space=space, data=data, target=target, latency_ms=latency_ms,
             loss=loss, lam=lam, beta=beta, adapt=adapt, constraint=constraint, epochs=epochs,
             warmup_epochs=warmup_epochs,
             batch_size=batch_size, lr=lr, arch_lr=arch_lr, max_train=max_train, resolution=resolution,
             width=width, candidates=_candidates(candidates), sharing=weight_sharing, derive=derive, window=window,
             select_from=select_from, arch_every=arch_every, seed=seed, threads=threads,
             cache_dir=cache_dir, retrain_epochs=retrain_epochs, init_weights=init_weights,
             zero_gamma=zero_gamma)

    search.__doc__ = ("Search with binarized paths and a latency loss; writes OUT/arch.json (resumable)."
                      if method == "proxyless" else
                      "Search with DARTS's relaxation (first order); writes OUT/arch.json (resumable).")
    return search


proxyless_app.command("search")(_search_command("proxyless"))
darts_app.command("search")(_search_command("darts"))


def register(app: typer.Typer) -> None:
    """Add the ``proxyless`` and ``darts`` groups to the main app."""
    app.add_typer(proxyless_app, name="proxyless")
    app.add_typer(darts_app, name="darts")
