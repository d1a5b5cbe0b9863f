"""``edgenas latency kernels`` and ``edgenas latency kernels-eval``: nn-Meter-style kernel-level latency
predictors (thin wrappers over :mod:`edgenas.hardware.kernel_predictor`)."""

from __future__ import annotations

from pathlib import Path

import typer


def _spaces(text: str) -> list:  # noqa: ANN202 - SearchSpace objects
    from edgenas.errors import EdgenasError
    from edgenas.spaces import get_space
    from edgenas.spaces.transformer import HATSpace

    spaces = [get_space(s.strip()) for s in text.split(",") if s.strip()]
    if not spaces:
        raise EdgenasError("--spaces needs at least one space, e.g. --spaces mbv3-tiny,nb201")
    for s in spaces:
        if isinstance(s, HATSpace):
            raise EdgenasError(f"kernel predictors cover convolutional networks; '{s.name}' is a Transformer "
                               f"space (use 'edgenas latency fit --space {s.name} --measure N')")
    return spaces


def kernels(
    out: Path = typer.Option(..., "--out", help="Where to write the predictor (.npz); measurements go beside it."),
    spaces: str = typer.Option("mbv3-tiny,nb201", help="Spaces whose networks' kernels are sampled (comma list)."),
    networks: int = typer.Option(10, help="Random networks per space whose kernels are the prior."),
    variants: int = typer.Option(1, help="Perturbed copies of each prior kernel (channels, input size)."),
    random: int = typer.Option(100, help="Kernels per type drawn across the ranges the prior spans."),
    adaptive: int = typer.Option(1, help="Rounds of sampling more around the worst-predicted kernels."),
    calibrate: int = typer.Option(10, help="Whole networks per space measured for the calibration."),
    threads: int = typer.Option(1, help="Threads used by the measured runtime."),
    seed: int = typer.Option(0),
) -> None:
    """Measure sampled kernels on this machine and fit one latency regressor per kernel type (nn-Meter)."""
    from edgenas.hardware.kernel_predictor import build_kernel_predictor
    from edgenas.hardware.measure import MeasureSettings

    summary = build_kernel_predictor(_spaces(spaces), out, MeasureSettings(threads=threads), networks, variants,
                                     calibrate, seed, random_per_type=random, adaptive=adaptive,
                                     log=lambda s: typer.echo(s, err=True))
    c = summary["calibration"]
    per = ", ".join(f"{k} {v}" for k, v in summary["per_type"].items())
    typer.echo(f"wrote {out}: {summary['kernels']} kernels ({per}); latency ~ {c['a']:.3f} x sum "
               f"{c['b']:+.4f} ms x kernels {c['c']:+.4f} ms (calibration MAPE {c['train_mape'] or 0:.1f}% on "
               f"{c['networks']} networks)")


def kernels_eval(
    predictor: Path = typer.Argument(..., help="A kernel predictor written by 'edgenas latency kernels'."),
    space: str = typer.Option(..., help="The space whose random networks are measured and predicted."),
    networks: int = typer.Option(20, help="Random networks to measure."),
    seed: int = typer.Option(12345),
    json_out: Path = typer.Option(None, "--json", help="Write every network's figures here."),
) -> None:
    """Measure random networks of SPACE and compare them with the kernel predictor's latencies."""
    from edgenas.hardware.kernel_predictor import KernelPredictor, evaluate_on_space
    from edgenas.hardware.measure import MeasureSettings
    from edgenas.io import atomic_write_json

    pred = KernelPredictor.load(predictor)
    res = evaluate_on_space(pred, _spaces(space)[0], networks, MeasureSettings(threads=pred.threads), seed)
    typer.echo(f"{space}: {networks} networks, MAPE {res['mape_pct']:.1f}%, "
               f"within +-10% {100 * res['within_10pct']:.0f}%, RMSE {res['rmse_ms']:.4f} ms, "
               f"Spearman {res['spearman']:.3f}")
    if json_out:
        atomic_write_json(json_out, res)


def register(latency_app: typer.Typer) -> None:
    latency_app.command("kernels")(kernels)
    latency_app.command("kernels-eval")(kernels_eval)
