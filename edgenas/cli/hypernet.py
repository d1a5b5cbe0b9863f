"""``edgenas hypernet train``: SMASH's or a Graph HyperNetwork's weight generator for NB201 cells (then
``edgenas search --estimator hypernet:DIR``)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgenas.errors import EdgenasError

hypernet_app = typer.Typer(help="SMASH / Graph HyperNetworks: a HyperNet that generates any NB201 cell network's "
                           "weights.",
                           no_args_is_help=True)


@hypernet_app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Folder for last.pt, hypernet.pt and report.json."),
    space: str = typer.Option("nb201", help="An NB201 cell space."),
    data: str = typer.Option("digits", help="digits | npz:PATH | cifar10:PATH | folder:PATH | synthetic"),
    steps: int = typer.Option(1000, help="Training steps, each on one uniformly sampled architecture."),
    batch_size: int = typer.Option(64, help="Images per step."),
    lr: float = typer.Option(0.05, help="Peak learning rate (SGD-Nesterov, cosine)."),
    channels: int = typer.Option(16, help="Channels of the first stage (NB201: 16)."),
    cells_per_stage: int = typer.Option(2, help="Cells per stage (NB201: 5)."),
    rank: int = typer.Option(16, help="Rank of the weight generator (basis size per stage and op)."),
    shared: bool = typer.Option(False, "--shared", help="Plain weight sharing instead: weights not conditioned "
                                "on the architecture (the baseline)."),
    ghn: bool = typer.Option(False, "--ghn", help="A Graph HyperNetwork (Zhang et al., ICLR 2019): weights decoded "
                             "from a GNN's embedding of each op in the network's computation graph."),
    rounds: int = typer.Option(1, help="With --ghn: forward-backward propagation sweeps over the graph."),
    max_train: int = typer.Option(None, help="Use only the first N training images."),
    seed: int = typer.Option(0, help="Seed of the weights and the sampled architectures."),
    threads: int = typer.Option(1, help="Torch threads."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train a SMASH HyperNet (or with --ghn a Graph HyperNetwork) on uniformly sampled NB201 cells (resumable:
    --resume)."""
    import torch

    from edgenas.data import load_dataset
    from edgenas.estimators.hypernet import HyperNetConfig, train_hypernet
    from edgenas.spaces import get_space
    from edgenas.spaces.nb201 import NB201Space

    if min(steps, batch_size, channels, cells_per_stage, rank, rounds) < 1 or lr <= 0:
        raise EdgenasError("--steps, --batch-size, --channels, --cells-per-stage, --rank and --rounds must be at "
                           "least 1 and --lr positive")
    if ghn and shared:
        raise EdgenasError("--ghn and --shared exclude each other: a graph hypernetwork is conditioned on the "
                           "architecture, --shared is not")
    torch.set_num_threads(threads)
    sp = get_space(space)
    if not isinstance(sp, NB201Space):
        raise EdgenasError(f"the SMASH HyperNet generates NB201 cell networks; space '{space}' is not one")
    d = load_dataset(data)
    d = d.subset(max_train) if max_train else d
    cfg = HyperNetConfig(channels=channels, cells_per_stage=cells_per_stage, rank=rank, conditioned=not shared,
                         graph=ghn, rounds=rounds, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    report = train_hypernet(sp, d, out, cfg, resume=resume, progress=lambda m: typer.echo(m, err=True))
    last = report["history"][-1]
    kind = "weight-sharing one-shot model" if shared else "graph HyperNet" if ghn else "HyperNet"
    typer.echo(f"{kind}: {out / 'hypernet.pt'} (final training "
               f"loss {last['loss']:.3f}, {last['seconds']:.0f} s); rank architectures with: edgenas search --space "
               f"{sp.name} --data {data} --estimator hypernet:{out} ...")


def register(app: typer.Typer) -> None:
    app.add_typer(hypernet_app, name="hypernet")
