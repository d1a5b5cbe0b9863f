"""``edgenas ofa train | predictor | specialize``: thin wrappers over :mod:`edgenas.supernets` (Once-for-All)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from edgenas.errors import EdgenasError

ofa_app = typer.Typer(help="Once-for-All: train one supernet, specialise it for many devices.", no_args_is_help=True)


def _say(msg: str) -> None:
    typer.echo(msg, err=True)


def _data(spec: str, max_train: int | None, max_val: int | None):  # noqa: ANN202
    from edgenas.data import load_dataset

    d = load_dataset(spec)
    return d.subset(max_train, max_val) if (max_train or max_val) else d


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    x = list(range(1, len(history) + 1))
    ax[0].plot(x, [h["loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss (CE + KD)")
    ax[1].plot(x, [h["acc_largest"] for h in history], marker="o", label="largest")
    ax[1].plot(x, [h["acc_smallest"] for h in history], marker="o", label="smallest")
    ax[1].set(xlabel="epoch", ylabel="val. accuracy (%), BN recalibrated")
    ax[1].legend()
    for i, h in enumerate(history):
        if i == 0 or history[i - 1]["phase"] != h["phase"]:
            for a in ax:
                a.axvline(i + 0.5, color="grey", lw=0.5)
            ax[0].annotate(h["phase"], (i + 0.6, ax[0].get_ylim()[1]), va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DEVICE_HELP = "Where to run the networks: cpu | cuda | cuda:N | mps | auto (a CUDA GPU when one is visible)."


@ofa_app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Folder for checkpoints (last.pt, phase*.pt, supernet.pt) and curves."),
    space: str = typer.Option("mbv3-tiny", help="An MBV3-style space (mbv3, mbv3-tiny, or module:attribute)."),
    data: str = typer.Option("digits", help="digits | npz:PATH | cifar10:PATH | folder:PATH | synthetic"),
    schedule: str = typer.Option("full:2,kernel:1,depth:1,expand:1",
                                 help="Phases with epochs: progressive shrinking, or 'joint:N' (the baseline)."),
    batch_size: int = typer.Option(32, help="Images per step."),
    lr: float = typer.Option(0.1, help="Peak learning rate (later phases use half; cosine per phase)."),
    subnets_per_step: int = typer.Option(2, help="Subnets sampled per step after the full phase."),
    kd_ratio: float = typer.Option(1.0, help="Weight of the distillation loss from the full network."),
    seed: int = typer.Option(0, help="Seed of initial weights, batch order and subnet sampling."),
    threads: int = typer.Option(1, help="Torch threads."),
    max_train: int = typer.Option(None, help="Use only the first N training images."),
    max_val: int = typer.Option(None, help="Use only the first N validation images."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    augment: bool = typer.Option(False, "--augment", help="Random crops of padded images and horizontal flips."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
) -> None:
    """Train an OFA supernet by progressive shrinking (resumable: --resume)."""
    from edgenas.estimators.train import torch_device
    from edgenas.spaces import get_space
    from edgenas.supernets.shrinking import ShrinkConfig, train_supernet

    dev = torch_device(device)
    sp = get_space(space)
    d = _data(data, max_train, max_val)
    cfg = ShrinkConfig(schedule=schedule, batch_size=batch_size, lr=lr, subnets_per_step=subnets_per_step,
                       kd_ratio=kd_ratio, seed=seed, threads=threads, augment=augment)
    _say(f"training an OFA supernet of {sp.name} on {d.name} ({len(d.x_train)} train / {len(d.x_val)} val), "
         f"schedule {schedule}, on {dev}")
    res = train_supernet(sp, d, out, cfg, resume=resume, progress=_say, device=dev)
    if res.history:
        _plot_curves(res.history, out / "curves.png")
    last = res.history[-1] if res.history else {}
    typer.echo(f"supernet -> {out / 'supernet.pt'} (curves: {out / 'curves.png'}, history: {out / 'history.json'}); "
               f"last epoch: largest {last.get('acc_largest', float('nan')):.1f}%, smallest "
               f"{last.get('acc_smallest', float('nan')):.1f}% (BN recalibrated)")
    typer.echo(f"next: edgenas ofa specialize --supernet {out} --data {data} --targets cpu --latency-ms 1.0 "
               f"--out {out / 'specialized'}")


def _load(supernet: str, data: str, max_train: int | None, max_val: int | None,  # noqa: ANN202
          device: str = "cpu"):
    """The supernet and the data, both on ``device``."""
    from edgenas.supernets.pairs_on_ray import load_supernet_and_data

    return load_supernet_and_data(supernet, data, max_train, max_val, device)


def _check_workers(workers: int, device: str) -> None:
    if workers < 1:
        raise EdgenasError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and device != "cpu":
        raise EdgenasError(f"--workers {workers} measures accuracy pairs on CPU Ray workers; use --device cpu, "
                           "or --workers 1 to measure them on the GPU")


def _pairs_on_ray(workers: int, device: str, ray_address: str | None, supernet: str, data: str, n: int,
                  cache: Path, seed: int, recal: int, val: int | None, max_train: int | None, max_val: int | None,
                  keep_hits: bool = False) -> None:
    """With ``--workers N`` > 1 (checked by :func:`_check_workers`): measure the pairs into ``cache`` on Ray
    first (the serial call then reads them)."""
    if workers == 1:
        return
    from edgenas.supernets.pairs_on_ray import measure_pairs_on_ray

    measure_pairs_on_ray(supernet, data, n, cache, workers, seed, recal, val, max_train, max_val, keep_hits,
                         ray_address, _say)


WORKERS_HELP = "Measure the accuracy pairs on N Ray workers (CPU; 1: in this process)."
RAY_HELP = "Join this Ray cluster (its nodes must share --out) instead of starting one here ($RAY_ADDRESS)."


@ofa_app.command("predictor")
def predictor(
    supernet: str = typer.Option(..., "--supernet", help="A checkpoint or the training folder."),
    data: str = typer.Option(..., help="The data the supernet was trained on."),
    out: Path = typer.Option(..., "--out", help="Where to save the predictor (.npz)."),
    pairs: int = typer.Option(300, help="Subnets measured to train the predictor."),
    holdout: int = typer.Option(100, help="Further subnets measured to test it (Spearman, RMSE)."),
    recal: int = typer.Option(500, help="Training images for each subnet's BN recalibration."),
    val: int = typer.Option(None, help="Validation images per subnet (default all)."),
    seed: int = typer.Option(0, help="Seed of the sampled subnets."),
    max_train: int = typer.Option(None, help="Use only the first N training images."),
    max_val: int = typer.Option(None, help="Use only the first N validation images."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    workers: int = typer.Option(1, help=WORKERS_HELP),
    ray_address: str = typer.Option(None, "--ray-address", help=RAY_HELP),
) -> None:
    """Measure (subnet, accuracy) pairs on the supernet and fit the accuracy predictor (resumable)."""
    import numpy as np
    from scipy.stats import spearmanr

    from edgenas.estimators.accuracy_predictor import AccuracyPredictor
    from edgenas.estimators.measurement_noise import split_half_noise
    from edgenas.supernets.specialize import cached_hits, measure_pairs

    _check_workers(workers, device)
    net, d = _load(supernet, data, max_train, max_val, device)
    cache = out.with_name(out.stem + "_pairs.jsonl")
    _pairs_on_ray(workers, device, ray_address, supernet, data, pairs, cache, seed, recal, val, max_train, max_val)
    archs, accs = measure_pairs(net, d, pairs, seed, recal, val, cache, _say)
    pred = AccuracyPredictor(net.space, random_state=seed).fit(archs, accs)
    pred.save(out)
    msg = f"accuracy predictor -> {out} ({len(accs)} pairs, cached in {cache})"
    if holdout:
        held_cache = out.with_name(out.stem + "_holdout.jsonl")
        _pairs_on_ray(workers, device, ray_address, supernet, data, holdout, held_cache, seed + 1, recal, val,
                      max_train, max_val, keep_hits=True)
        t_archs, t_accs = measure_pairs(net, d, holdout, seed + 1, recal, val, held_cache, _say, keep_hits=True)
        p, t = pred.predict(t_archs), np.asarray(t_accs)
        msg += (f"; on {holdout} held-out subnets: Spearman {spearmanr(p, t)[0]:.3f}, "
                f"RMSE {np.sqrt(np.mean((p - t) ** 2)):.2f} points "
                f"(their accuracies span {t.min():.1f}-{t.max():.1f}%)")
        n_val = len(d.x_val) if val is None else min(val, len(d.x_val))
        hits = cached_hits(net, t_archs, n_val, [held_cache])
        if hits is not None and holdout >= 3 and n_val >= 4:
            noise = split_half_noise(hits)
            msg += (f"; measurement noise {noise.noise_sd_points:.2f} points per subnet on {n_val} validation "
                    f"images: no predictor can reach a Spearman above about {noise.ceiling_spearman:.2f} "
                    f"against these measurements (split-half estimate; more validation images raise it)")
    typer.echo(msg)


@ofa_app.command("specialize")
def specialize_command(
    supernet: str = typer.Option(..., "--supernet", help="A checkpoint or the training folder."),
    data: str = typer.Option(..., help="The data the supernet was trained on."),
    targets: str = typer.Option(..., "--targets", help="Comma-separated targets: cpu, lut:PATH, predictor:PATH, "
                                                        "named devices (edgenas latency devices)."),
    latency_ms: str = typer.Option(..., "--latency-ms", help="Comma-separated budgets (ms), one per target."),
    out: Path = typer.Option(..., "--out", help="Folder for the subnets (ONNX + weights + JSON) and the report."),
    predictor_path: Path = typer.Option(None, "--predictor", help="A saved accuracy predictor (else one is fitted)."),
    pairs: int = typer.Option(300, help="Subnets measured to fit the predictor when none is given."),
    recal: int = typer.Option(500, help="Training images for BN recalibration."),
    generations: int = typer.Option(500, help="Generations of the evolutionary search."),
    population: int = typer.Option(100, help="Population of the evolutionary search."),
    seed: int = typer.Option(0, help="Seed."),
    max_train: int = typer.Option(None, help="Use only the first N training images."),
    max_val: int = typer.Option(None, help="Use only the first N validation images."),
    bench_data: str = typer.Option(None, help="Reference data folder for named devices' tables ($EDGENAS_DATA)."),
    device: str = typer.Option("cpu", help=DEVICE_HELP + " Accuracy pairs and evaluation run there; "
                                                         "latency is always that of the targets."),
    workers: int = typer.Option(1, help=WORKERS_HELP + " Only when no --predictor is given."),
    ray_address: str = typer.Option(None, "--ray-address", help=RAY_HELP),
) -> None:
    """Find, extract, recalibrate, evaluate and export one subnet per target; print the cross table."""
    from edgenas.estimators.accuracy_predictor import AccuracyPredictor
    from edgenas.supernets.specialize import specialize

    if bench_data:
        os.environ["EDGENAS_DATA"] = bench_data
    specs = [t.strip() for t in targets.split(",") if t.strip()]
    try:
        budgets = [float(b) for b in latency_ms.split(",") if b.strip()]
    except ValueError:
        raise EdgenasError(f"--latency-ms takes comma-separated numbers, got '{latency_ms}'") from None
    if len(budgets) == 1 and len(specs) > 1:
        budgets = budgets * len(specs)
    _check_workers(workers, device)
    net, d = _load(supernet, data, max_train, max_val, device)
    pred = AccuracyPredictor.load(predictor_path, net.space) if predictor_path else None
    if pred is None:  # the pairs specialize() fits its predictor on, measured side by side first
        _pairs_on_ray(workers, device, ray_address, supernet, data, pairs, out / "accuracy_pairs.jsonl", seed, recal,
                      None, max_train, max_val)
    res = specialize(net, d, data, specs, budgets, out, pred, pairs=pairs, recal=recal, generations=generations,
                     population=population, seed=seed, progress=_say)
    typer.echo(res.markdown)
    typer.echo(f"report -> {out / 'report.md'}, {out / 'report.json'}; subnets -> {out}/subnet_*.onnx")


def register(app: typer.Typer) -> None:
    app.add_typer(ofa_app, name="ofa")
