"""Training the HAT SuperTransformer, and scoring its SubTransformers with the shared weights.

Wang et al., "HAT: Hardware-Aware Transformers for Efficient Natural Language Processing" (ACL 2020),
section 3.2: the SuperTransformer is trained by sampling one SubTransformer uniformly at random per step
and updating the weights it uses; afterwards a SubTransformer's validation loss *with the inherited
weights* ranks it (HAT reports inherited and from-scratch BLEU to be well correlated), so the evolutionary
search (:mod:`edgenas.supernets.hat_search`) needs no training per candidate.

Training here: Adam (betas 0.9 / 0.98), a linear warm-up then cosine decay, label-smoothed cross-entropy
over the non-padding target tokens; the largest and the smallest SubTransformer's validation loss and BLEU
are logged every ``eval_every`` steps.

Checkpoints: ``OUT/last.pt`` every ``checkpoint_every`` steps (weights, optimiser, step, random states,
curve) and ``OUT/supertransformer.pt`` at the end; ``resume=True`` continues from ``last.pt``. They hold
tensors and plain values only (``torch.load(..., weights_only=True)``) and say what they were built for
(space and its configuration, vocabularies); loading one elsewhere is a one-line error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.errors import EdgenasError
from edgenas.io import atomic_write_json
from edgenas.models.transformer import PAD, ElasticTransformer, TransformerShape, build_supertransformer
from edgenas.spaces.transformer import HATSpace
from edgenas.supernets.checkpoint_files import read_checkpoint, save_checkpoint
from edgenas.translation_data import ParallelData, Split, corpus_bleu

FORMAT = "edgenas-hat-checkpoint/1"


@dataclass
class HATTrainConfig:
    """SuperTransformer training settings (see the module docstring)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    label_smoothing: float = 0.1
    dropout: float = 0.1
    eval_every: int = 250
    checkpoint_every: int = 250
    seed: int = 0


def _built_for(space: HATSpace, data: ParallelData) -> dict[str, Any]:
    return {"space": space.name, "space_config": space.to_dict(), "src_words": data.src_words,
            "tgt_words": data.tgt_words}


def _describe(built: Mapping[str, Any]) -> str:
    return (f"space '{built['space']}' with {len(built['src_words'])} source and {len(built['tgt_words'])} "
            "target words")


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A HAT checkpoint (a file, or an ``edgenas hat train`` folder), read safely."""
    return read_checkpoint(path, FORMAT, ("supertransformer.pt", "last.pt"), "HAT", "SuperTransformer",
                           "edgenas hat train")


def load_supertransformer(path: str | Path, space: HATSpace | None = None) -> tuple[ElasticTransformer, dict[str, Any]]:
    """The SuperTransformer of a checkpoint; with ``space`` given the checkpoint must be built for it."""
    from edgenas.spaces import get_space

    blob = load_checkpoint(path)
    built = json.loads(blob["built_for"])
    stored_space = get_space(blob.get("space_ref") or built["space"])
    if space is not None and (space.name, _plain(space.to_dict())) != (built["space"], built["space_config"]):
        raise EdgenasError(f"checkpoint '{blob['path']}' was built for {_describe(built)}, not for space "
                           f"'{space.name}'")
    if not isinstance(stored_space, HATSpace) or _plain(stored_space.to_dict()) != built["space_config"]:
        raise EdgenasError(f"checkpoint '{blob['path']}' was built for {_describe(built)}, whose configuration "
                           "this edgenas does not have")
    net = ElasticTransformer(stored_space, TransformerShape.from_dict(blob["shape"]))
    net.load_state_dict(blob["model"])
    net.set_active(stored_space.extreme(smallest=False))
    return net.eval(), blob


def check_data(blob: Mapping[str, Any], data: ParallelData) -> None:
    """A one-line error when ``data``'s vocabularies are not the checkpoint's."""
    built = json.loads(blob["built_for"])
    if (built["src_words"], built["tgt_words"]) != (data.src_words, data.tgt_words):
        raise EdgenasError(f"checkpoint '{blob['path']}' was trained on other vocabularies ({_describe(built)}); "
                           f"the data '{data.name}' has {data.src_vocab} and {data.tgt_vocab}: use the data it was "
                           "trained on")


# ------------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def validation_loss(net: ElasticTransformer, arch: Mapping[str, Any], split: Split, batch_size: int = 256) -> float:
    """Mean cross-entropy per target token (no label smoothing) of ``arch`` on ``split``."""
    was = net.training
    net.eval()
    net.set_active(arch)
    total, count = 0.0, 0
    for src, tgt in split.batches(batch_size):
        logits = net(src, tgt[:, :-1])
        gold = tgt[:, 1:]
        total += float(F.cross_entropy(logits.transpose(1, 2), gold, ignore_index=PAD, reduction="sum"))
        count += int((gold != PAD).sum())
    net.train(was)
    return total / max(count, 1)


@torch.no_grad()
def bleu(net: ElasticTransformer, arch: Mapping[str, Any], split: Split, batch_size: int = 256) -> float:
    """Corpus BLEU (%) of greedy translations of ``split`` by ``arch``."""
    was = net.training
    net.eval()
    net.set_active(arch)
    hyps, refs = [], []
    for src, tgt in split.batches(batch_size):
        out = net.translate(src, tgt.shape[1] + 2)
        for h, r in zip(out.tolist(), tgt[:, 1:].tolist(), strict=True):
            hyps.append(_until_eos(h))
            refs.append(_until_eos(r))
    net.train(was)
    return corpus_bleu(hyps, refs)


def _until_eos(ids: list[int]) -> list[int]:
    out = []
    for i in ids:
        if i in (2, PAD):
            break
        out.append(i)
    return out


# ------------------------------------------------------------------------------------------ training
def _lr_at(step: int, cfg: HATTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_step(net: ElasticTransformer, opt: torch.optim.Optimizer, src: torch.Tensor, tgt: torch.Tensor,
               label_smoothing: float) -> float:
    logits = net(src, tgt[:, :-1])
    loss = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def train_supertransformer(space: HATSpace, data: ParallelData, out: str | Path, cfg: HATTrainConfig | None = None,
                           resume: bool = False, device: torch.device | str = "cpu",
                           progress: Callable[[str], None] | None = None, data_spec: str = "") -> dict[str, Any]:
    """Train a SuperTransformer on ``data`` by uniform SubTransformer sampling (HAT); returns the report.
    ``data_spec`` (how to load ``data`` again, e.g. ``reverse``) is kept in the checkpoint for the search.
    Dropout draws from torch's generator seeded with ``cfg.seed`` (restored on resume); the caller's
    generator state is left as it was."""
    cfg = cfg or HATTrainConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _train_supertransformer(space, data, Path(out), cfg, resume, torch.device(device), progress,
                                       data_spec)


def _train_supertransformer(space: HATSpace, data: ParallelData, out: Path, cfg: HATTrainConfig, resume: bool,
                            device: torch.device, progress: Callable[[str], None] | None,
                            data_spec: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    built = _built_for(space, data)
    net = build_supertransformer(space, data.src_vocab, data.tgt_vocab, cfg.dropout, cfg.seed).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    rng = np.random.default_rng(cfg.seed)
    step, history = 0, []
    if resume:
        blob = load_checkpoint(out / "last.pt")
        if json.loads(blob["built_for"]) != json.loads(json.dumps(built)):
            raise EdgenasError(f"'{blob['path']}' was built for {_describe(json.loads(blob['built_for']))}; "
                               f"this run is for {_describe(built)}: use another --out")
        if json.loads(blob["config"]) != asdict(cfg):
            raise EdgenasError(f"'{blob['path']}' was trained with other settings {blob['config']}; resume with "
                               "the same ones")
        net.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        step, history = int(blob["step"]), json.loads(blob["history"])
        rng.bit_generator.state = json.loads(blob["rng"])
        torch.set_rng_state(blob["torch_rng"])
        say(f"resumed at step {step} of {cfg.steps}")
    largest, smallest = space.extreme(smallest=False), space.extreme(smallest=True)

    def checkpoint(path: Path, with_optimizer: bool) -> None:
        blob = {"format": FORMAT, "built_for": json.dumps(built), "space_ref": space.ref or space.name,
                "data_spec": data_spec,
                "shape": TransformerShape.largest(space, data.src_vocab, data.tgt_vocab).to_dict(),
                "model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "step": step,
                "history": json.dumps(history), "config": json.dumps(asdict(cfg)),
                "rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
        if with_optimizer:
            blob["optimizer"] = opt.state_dict()
        save_checkpoint(path, blob)

    t0, losses = time.perf_counter(), []
    net.train()
    per_epoch = math.ceil(len(data.train) / cfg.batch_size)  # every epoch has as many batches
    epoch, position = divmod(step, per_epoch)
    batches = data.train.batches(cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
    while step < cfg.steps:
        if position >= len(batches):
            epoch += 1
            batches, position = data.train.batches(cfg.batch_size, np.random.default_rng([cfg.seed, epoch])), 0
        src, tgt = (t.to(device) for t in batches[position])
        position += 1
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        net.set_active(space.sample(rng))  # HAT: one uniformly sampled SubTransformer per step
        losses.append(train_step(net, opt, src, tgt, cfg.label_smoothing))
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = data.val
            row = {"step": step, "train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0,
                   "val_loss_largest": validation_loss(net, largest, _on(val, device)),
                   "val_loss_smallest": validation_loss(net, smallest, _on(val, device))}
            history.append(row)
            losses = []
            say(f"step {step}/{cfg.steps}: train loss {row['train_loss']:.3f}, validation loss largest "
                f"{row['val_loss_largest']:.3f} / smallest {row['val_loss_smallest']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint(out / "last.pt", with_optimizer=True)
    net.eval()
    test = _on(data.test, device)
    report = {"space": space.name, "data": data.name, "config": asdict(cfg), "steps": step,
              "train_seconds": time.perf_counter() - t0, "history": history,
              "test_bleu_largest": bleu(net, largest, test), "test_bleu_smallest": bleu(net, smallest, test),
              "val_loss_largest": validation_loss(net, largest, _on(data.val, device)),
              "val_loss_smallest": validation_loss(net, smallest, _on(data.val, device))}
    checkpoint(out / "supertransformer.pt", with_optimizer=False)
    atomic_write_json(out / "report.json", report)
    return report


def _on(split: Split, device: torch.device) -> Split:
    return split if device.type == "cpu" else Split(split.src.to(device), split.tgt.to(device))


# ------------------------------------------------------------------------------------------ SubTransformers
def train_subtransformer(space: HATSpace, arch: Mapping[str, Any], data: ParallelData, cfg: HATTrainConfig,
                         device: torch.device | str = "cpu",
                         progress: Callable[[str], None] | None = None) -> ElasticTransformer:
    """``arch`` trained from scratch with the SuperTransformer's recipe (HAT's final step), ``cfg.steps`` steps;
    deterministic for a seed (dropout from a generator seeded with ``cfg.seed``; the caller's left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _train_subtransformer(space, arch, data, cfg, torch.device(device), progress)


def _train_subtransformer(space: HATSpace, arch: Mapping[str, Any], data: ParallelData, cfg: HATTrainConfig,
                          device: torch.device, progress: Callable[[str], None] | None) -> ElasticTransformer:
    from edgenas.models.transformer import build_subtransformer

    net = build_subtransformer(space, arch, data.src_vocab, data.tgt_vocab, cfg.dropout, cfg.seed).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    net.train()
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    for step in range(cfg.steps):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            batches = data.train.batches(cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        src, tgt = (t.to(device) for t in batches[position])
        loss = train_step(net, opt, src, tgt, cfg.label_smoothing)
        if progress and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            progress(f"retrain step {step + 1}/{cfg.steps}: loss {loss:.3f}")
    return net.eval()


def save_subtransformer(net: ElasticTransformer, path: str | Path, data: ParallelData) -> None:
    """A SubTransformer's weights with its architecture and vocabularies (``weights_only``-loadable)."""
    save_checkpoint(Path(path), {"format": FORMAT + "+sub", "space_ref": net.space.ref or net.space.name,
                       "arch": json.dumps(net.arch), "shape": net.shape.to_dict(),
                       "src_words": list(data.src_words), "tgt_words": list(data.tgt_words),
                       "model": {k: v.detach().cpu() for k, v in net.state_dict().items()}})


def export_onnx(net: ElasticTransformer, path: str | Path, data: ParallelData) -> float:
    """Export ``(src, tgt_in) -> logits`` to ONNX (batch and both lengths dynamic) and return the largest
    difference between onnxruntime's and PyTorch's logits on validation sentences of other lengths."""
    import warnings

    import onnxruntime as ort

    net = net.cpu().eval()
    src, tgt = data.val.batches(4)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (src[:2, :5], tgt[:2, :4]), str(path), dynamo=False, opset_version=17,
                          input_names=["src", "tgt_in"], output_names=["logits"],
                          dynamic_axes={"src": {0: "batch", 1: "src_len"}, "tgt_in": {0: "batch", 1: "tgt_len"},
                                        "logits": {0: "batch", 1: "tgt_len"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = net(src, tgt[:, :-1]).numpy()
    got = sess.run(None, {"src": src.numpy(), "tgt_in": tgt[:, :-1].numpy()})[0]
    return float(np.abs(got - ref).max())
