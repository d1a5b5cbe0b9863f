"""``edgenas hat train | measure | search``: HAT's SuperTransformer, latency data and latency-constrained search."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from edgenas.errors import EdgenasError

hat_app = typer.Typer(help="HAT: train a SuperTransformer, measure SubTransformers, search one for a device.",
                      no_args_is_help=True)

DATA_HELP = ("reverse | bigram (built-in synthetic translation tasks; bigram is the harder) | tsv:PATH "
             "(source<TAB>target lines, tokenized)")


def _say(msg: str) -> None:
    typer.echo(msg, err=True)


def _hat_space(name: str):  # noqa: ANN202
    from edgenas.spaces import get_space
    from edgenas.spaces.transformer import HATSpace

    space = get_space(name)
    if not isinstance(space, HATSpace):
        raise EdgenasError(f"space '{name}' is not a HAT space; use hat-tiny or hat-wmt14")
    return space


def _data(spec: str, max_train: int | None = None, max_val: int | None = None):  # noqa: ANN202
    from edgenas.translation_data import load_parallel

    d = load_parallel(spec)
    return d.subset(max_train, max_val) if (max_train or max_val) else d


@hat_app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Folder for last.pt, supertransformer.pt, report.json, curve.png."),
    space: str = typer.Option("hat-tiny", help="A HAT space: hat-tiny (CPU-sized) or hat-wmt14 (the paper's)."),
    data: str = typer.Option("reverse", help=DATA_HELP),
    steps: int = typer.Option(2000, help="Training steps, each on one uniformly sampled SubTransformer."),
    batch_size: int = typer.Option(64, help="Sentence pairs per step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate of Adam (linear warm-up, cosine decay)."),
    warmup: int = typer.Option(100, help="Warm-up steps."),
    eval_every: int = typer.Option(250, help="Log the largest / smallest SubTransformer's validation loss every N."),
    seed: int = typer.Option(0, help="Seed of the weights, batch order and SubTransformer sampling."),
    threads: int = typer.Option(1, help="Torch threads."),
    max_train: int = typer.Option(None, help="Use only the first N training pairs."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | mps | auto."),
) -> None:
    """Train a HAT SuperTransformer by sampling one SubTransformer per step (resumable: --resume)."""
    import torch

    from edgenas.estimators.train import torch_device
    from edgenas.supernets.hat import HATTrainConfig, train_supertransformer

    if min(steps, batch_size, eval_every) < 1 or lr <= 0:
        raise EdgenasError("--steps, --batch-size and --eval-every must be at least 1 and --lr positive")
    dev = torch_device(device)
    torch.set_num_threads(threads)
    sp = _hat_space(space)
    d = _data(data, max_train)
    cfg = HATTrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, eval_every=eval_every,
                         checkpoint_every=eval_every, seed=seed)
    _say(f"SuperTransformer of {sp.name} on '{d.name}' ({len(d.train)} training pairs, {d.src_vocab}/{d.tgt_vocab} "
         f"words): {steps} steps")
    report = train_supertransformer(sp, d, out, cfg, resume=resume, device=dev, progress=_say, data_spec=data)
    _plot_curve(report["history"], out / "curve.png")
    typer.echo(f"SuperTransformer: {out / 'supertransformer.pt'} ({report['train_seconds']:.0f} s); test BLEU "
               f"largest {report['test_bleu_largest']:.1f}, smallest {report['test_bleu_smallest']:.1f} (inherited "
               f"weights); report {out / 'report.json'}")


def _plot_curve(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], marker="o", label="training (sampled, smoothed labels)")
    ax.plot(steps, [h["val_loss_largest"] for h in history], marker="o", label="validation, largest")
    ax.plot(steps, [h["val_loss_smallest"] for h in history], marker="o", label="validation, smallest")
    ax.set(xlabel="step", ylabel="loss per token")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@hat_app.command("measure")
def measure(
    out: Path = typer.Option(..., "--out", help="CSV in HAT's format (continued if it exists)."),
    space: str = typer.Option("hat-tiny", help="A HAT space."),
    n: int = typer.Option(100, "--n", help="SubTransformers to measure (the smallest and largest first)."),
    data: str = typer.Option("reverse", help="Data whose vocabulary sizes the networks get. " + DATA_HELP),
    source_tokens: int = typer.Option(12, help="Length of the sentence translated."),
    target_tokens: int = typer.Option(12, help="Decoder steps (output tokens)."),
    threads: int = typer.Option(1, help="Torch threads of the measured process."),
    runs: int = typer.Option(15, help="Timed translations per SubTransformer (median)."),
    seed: int = typer.Option(0, help="Seed of the SubTransformers drawn."),
) -> None:
    """Measure SubTransformers' translation latency on this CPU (fresh process each) into a HAT-style CSV,
    for 'edgenas latency fit --space SPACE --dataset CSV'."""
    from edgenas.hardware.transformer_latency import TranslationTiming, collect_dataset

    if n < 1:
        raise EdgenasError("--n must be at least 1")
    sp = _hat_space(space)
    d = _data(data)
    timing = TranslationTiming(source_tokens, target_tokens, d.src_vocab, d.tgt_vocab, threads, runs=runs)
    t0 = time.perf_counter()
    rows = collect_dataset(sp, n, str(out), timing, seed, progress=_say)
    typer.echo(f"{len(rows)} SubTransformers in {out} ({time.perf_counter() - t0:.0f} s); fit a predictor with: "
               f"edgenas latency fit --space {sp.name} --dataset {out} --out latency.npz")


@hat_app.command("search")
def search(
    supernet: Path = typer.Option(..., "--supernet", help="A SuperTransformer checkpoint or 'hat train' folder."),
    target: str = typer.Option(..., "--target", help="predictor:FILE (from 'edgenas latency fit' on HAT data)."),
    latency_ms: float = typer.Option(..., "--latency-ms", help="Latency budget on the target (ms)."),
    out: Path = typer.Option(..., "--out", help="Folder for arch.json, search.json, subtransformer.pt, model.onnx."),
    data: str = typer.Option(None, help="Data (default: the SuperTransformer's own). " + DATA_HELP),
    parents: int = typer.Option(10, help="Parents kept per generation (HAT: 25)."),
    mutations: int = typer.Option(20, help="Mutated children per generation (HAT: 50)."),
    crossovers: int = typer.Option(20, help="Crossover children per generation (HAT: 50)."),
    generations: int = typer.Option(10, help="Generations (HAT: 30)."),
    mutate_prob: float = typer.Option(0.3, help="Per-gene mutation probability."),
    max_val: int = typer.Option(500, help="Validation pairs that score each candidate."),
    retrain_steps: int = typer.Option(0, help="Also train the found SubTransformer from scratch for N steps."),
    measure_found: bool = typer.Option(False, "--measure", help="Measure the found SubTransformer on this CPU and "
                                       "search again with a tighter predicted budget while it breaks the budget."),
    seed: int = typer.Option(0, help="Seed of the evolution."),
    threads: int = typer.Option(1, help="Torch threads."),
) -> None:
    """Find the SubTransformer with the lowest validation loss (SuperTransformer weights) within a latency budget
    (HAT's evolutionary search), then evaluate, optionally retrain, and export it to ONNX."""
    import torch

    from edgenas.hardware.predictor import LatencyPredictor
    from edgenas.hardware.targets import PredictedLatency
    from edgenas.io import atomic_write_json
    from edgenas.supernets.hat import bleu, check_data, load_supertransformer, validation_loss
    from edgenas.supernets.hat_search import HATSearchConfig, describe_arch, latency_function, search_and_verify

    torch.set_num_threads(threads)
    if not target.startswith("predictor:"):
        raise EdgenasError(f"unknown HAT target '{target}': give predictor:FILE, a latency predictor fitted on "
                           "measured SubTransformers (edgenas hat measure, then edgenas latency fit --space SPACE "
                           "--dataset CSV)")
    if latency_ms <= 0:
        raise EdgenasError(f"--latency-ms must be positive, got {latency_ms:g}")
    cfg = HATSearchConfig(parents, mutations, crossovers, generations, mutate_prob, seed=seed)
    net, blob = load_supertransformer(supernet)
    sp = net.space
    spec = data or blob.get("data_spec") or ""
    if not spec:
        raise EdgenasError("the checkpoint does not say what data it was trained on: pass --data")
    full = _data(spec)
    d = full.subset(max_val=max_val)
    check_data(blob, d)
    path = target.partition(":")[2]
    latency = PredictedLatency(LatencyPredictor.load(path, sp), path)
    out.mkdir(parents=True, exist_ok=True)

    def score(archs):  # noqa: ANN001, ANN202 - lower validation loss is better
        import numpy as np

        return np.array([-validation_loss(net, a, d.val) for a in archs])

    _say(f"searching {sp.name} within {latency_ms:g} ms ({latency.describe()}): population {cfg.population}, "
         f"{cfg.generations} generations")
    measure = None
    if measure_found:
        from edgenas.hardware.transformer_latency import TranslationTiming, measure_translation

        timing = TranslationTiming(src_vocab=d.src_vocab, tgt_vocab=d.tgt_vocab)

        def measure(a):  # noqa: ANN001, ANN202
            ms = measure_translation(sp, a, timing)
            return ms["latency_mean_encoder"] + ms["latency_mean_decoder"]

    checked = search_and_verify(sp, score, latency_function(latency), latency_ms, cfg, target, measure)
    res = checked.result
    arch = res.arch
    atomic_write_json(out / "arch.json", {"space": sp.name, "arch": arch})  # kept whatever happens next
    sub = net.extract(arch).eval()
    result = {"space": sp.name, "arch": arch, "target": target, "latency_ms_budget": latency_ms,
              "predicted_latency_ms": res.latency, "val_loss_inherited": -res.score,
              "test_bleu_inherited": bleu(net, arch, d.test), "supernet": blob["path"], "data": spec,
              "search": {"config": cfg.__dict__, "seconds": res.seconds, "scored": res.scored,
                         "proposals": res.proposals, "fallbacks": res.fallbacks, "history": res.history,
                         "rounds": checked.rounds}}
    _say(f"found in {res.seconds:.0f} s ({res.scored} SubTransformers scored): "
         f"{describe_arch(arch, sp.hat.encoder_layers)}")
    if retrain_steps > 0:
        from edgenas.supernets.hat import HATTrainConfig, train_subtransformer

        train_cfg = HATTrainConfig(**{**json.loads(blob["config"]), "steps": retrain_steps,
                                      "eval_every": max(1, retrain_steps // 4)})
        sub = train_subtransformer(sp, arch, full, train_cfg, progress=_say)
        result["retrain_steps"] = retrain_steps
        result["val_loss_retrained"] = validation_loss(sub, arch, d.val)
        result["test_bleu_retrained"] = bleu(sub, arch, d.test)
    if checked.measured is not None:
        result["measured_latency_ms"] = checked.measured
        if len(checked.rounds) > 1:
            _say("measured above the budget at first; searched again within " +
                 ", ".join(f"{r['budget_ms']:.3f}" for r in checked.rounds[1:]) + " ms (predicted)")
    from edgenas.supernets.hat import export_onnx, save_subtransformer

    save_subtransformer(sub, out / "subtransformer.pt", d)
    result["onnx"] = str(out / "model.onnx")
    result["onnxruntime_max_abs_diff"] = export_onnx(sub, out / "model.onnx", d)
    atomic_write_json(out / "search.json", result)
    measured = f", measured {result['measured_latency_ms']:.3f} ms" if measure_found else ""
    if measure_found and result["measured_latency_ms"] > latency_ms:
        measured += (f" (ABOVE the budget after {len(checked.rounds)} searches: raise --latency-ms or refit the "
                     "predictor)")
    retrained = f"; retrained {retrain_steps} steps: BLEU {result['test_bleu_retrained']:.1f}" if retrain_steps else ""
    lines = [f"SubTransformer within {latency_ms:g} ms: predicted {res.latency:.3f} ms{measured}",
             f"validation loss {-res.score:.3f}, test BLEU {result['test_bleu_inherited']:.1f} (SuperTransformer "
             f"weights){retrained}",
             f"{out / 'arch.json'}, {out / 'model.onnx'} (onnxruntime within "
             f"{result['onnxruntime_max_abs_diff']:.1e})"]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.add_typer(hat_app, name="hat")
