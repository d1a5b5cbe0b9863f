"""Progressive shrinking: train an OFA supernet so that all its subnets work, and a joint-training baseline.

Cai et al., "Once-for-All" (ICLR 2020), section 3.2: train the full network first, then support smaller
subnets in order -- elastic kernel, elastic depth, elastic width (expand ratio) -- while the elastic
resolution is drawn per batch throughout. In every later phase several subnets are sampled per step and
their gradients accumulated, and each learns from the full network's soft predictions (knowledge
distillation, Hinton et al. 2015) besides the labels. Before the width phase the hidden channels are sorted
by importance (:meth:`~edgenas.supernets.ofa.DynamicMBConv.sort_channels`).

A schedule is a list of :class:`Phase`; ``parse_schedule("full:2,kernel:1,depth:1,expand:1")`` makes OFA's,
``"joint:5"`` the baseline that samples from the whole space from the first step (no teacher). Phases are
cumulative: ``depth`` keeps the elastic kernel, ``expand`` keeps both and adds the width multiplier too.

Checkpoints: ``OUT/last.pt`` after every epoch (model, teacher, optimiser, schedule position) and
``OUT/phase{i}_{name}.pt`` at the end of each phase; ``resume=True`` continues from ``last.pt``, so an
interrupted run loses at most the epoch in progress. Checkpoints hold tensors and plain values only and
load with ``torch.load(..., weights_only=True)``; each says what it was built for (space, its
configuration, classes, channels), and loading it elsewhere is a one-line error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.data import Dataset
from edgenas.errors import EdgenasError
from edgenas.io import atomic_write_json
from edgenas.spaces.base import Arch
from edgenas.spaces.mbv3 import MBV3Space
from edgenas.supernets.checkpoint_files import read_checkpoint, save_checkpoint
from edgenas.supernets.ofa import OFAMobileNetV3

FORMAT = "edgenas-ofa-checkpoint/1"
PHASES = ("full", "kernel", "depth", "expand", "joint")


@dataclass
class Phase:
    """One phase of a schedule: which dimensions are elastic, for how many epochs, with what."""

    name: str
    epochs: int
    lr_scale: float = 1.0

    @property
    def elastic(self) -> set[str]:
        order = {"full": set(), "kernel": {"kernel"}, "depth": {"kernel", "depth"},
                 "expand": {"kernel", "depth", "expand", "width"}, "joint": {"kernel", "depth", "expand", "width"}}
        return order[self.name]


def parse_schedule(spec: str) -> list[Phase]:
    """``"full:2,kernel:1,depth:1,expand:1"`` -> phases (names: full, kernel, depth, expand, joint)."""
    phases = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, epochs = part.partition(":")
        if name not in PHASES:
            raise EdgenasError(f"unknown phase '{name}' in schedule '{spec}'; phases: {', '.join(PHASES)}")
        try:
            n = int(epochs or 1)
        except ValueError:
            raise EdgenasError(f"phase '{part}': the epochs after ':' must be an integer") from None
        if n < 0:
            raise EdgenasError(f"phase '{part}': epochs must be >= 0")
        phases.append(Phase(name, n, 1.0 if name in ("full", "joint") else 0.5))
    if not phases:
        raise EdgenasError("empty schedule; e.g. --schedule full:2,kernel:1,depth:1,expand:1")
    return phases


@dataclass
class ShrinkConfig:
    """Hyper-parameters of supernet training (defaults sized for CPU runs of mbv3-tiny)."""

    schedule: str = "full:2,kernel:1,depth:1,expand:1"
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    subnets_per_step: int = 2
    kd_ratio: float = 1.0
    seed: int = 0
    threads: int = 1
    eval_images: int = 500  # images for the per-epoch curve (largest and smallest subnet; as many to recalibrate)
    augment: bool = False  # random crops of padded images and horizontal flips (edgenas.augment)

    def phases(self) -> list[Phase]:
        return parse_schedule(self.schedule)


@dataclass
class TrainResult:
    out: Path
    supernet: OFAMobileNetV3
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None


def sample_subnet(space: MBV3Space, elastic: set[str], rng: np.random.Generator) -> Arch:
    """A random subnet whose non-elastic dimensions are at their largest choice (resolution is drawn
    separately per batch and set here to the largest)."""
    arch: Arch = {}
    for d in space.dimensions:
        kind = d.name.rsplit(".", 1)[-1]
        if kind in elastic:
            arch[d.name] = d.choices[int(rng.integers(len(d.choices)))]
        else:
            arch[d.name] = max(d.choices)
    return space.validate(arch)


def describe_built_for(b: Mapping[str, Any]) -> str:
    return f"space '{b.get('space')}' ({b.get('num_classes')} classes, {b.get('in_channels')} input channels)"


def check_built_for(found: Mapping[str, Any], expected: Mapping[str, Any], path: str) -> None:
    """A one-line error when a checkpoint was made for another space, size, classes or channels."""
    if json.dumps(dict(found), sort_keys=True) != json.dumps(dict(expected), sort_keys=True):
        same_name = found.get("space") == expected.get("space")
        raise EdgenasError(
            f"checkpoint '{path}' was built for {describe_built_for(found)}"
            f"{' with another configuration of that space' if same_name else ''}, "
            f"not for {describe_built_for(expected)}"
        )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); a clear error for anything else."""
    return read_checkpoint(path, FORMAT, ("supernet.pt", "last.pt"), "OFA", "supernet", "edgenas ofa train")


def load_supernet(path: str | Path, space: MBV3Space | None = None) -> tuple[OFAMobileNetV3, dict[str, Any]]:
    """The supernet stored in a checkpoint (file or training folder). With ``space`` given, the checkpoint
    must have been built for it."""
    from edgenas.spaces import get_space

    blob = load_checkpoint(path)
    built = json.loads(blob["built_for"])
    if space is None:
        space = get_space(blob.get("space_ref") or built["space"])
    expected = {"space": space.name, "space_config": space.to_dict(), "num_classes": built["num_classes"],
                "in_channels": built["in_channels"]}
    check_built_for(built, expected, blob["path"])
    net = OFAMobileNetV3(space, built["num_classes"], built["in_channels"])
    net.load_state_dict(blob["model"])
    return net.eval(), blob


@torch.no_grad()
def quick_accuracy(net: OFAMobileNetV3, arch: Arch, x: torch.Tensor, y: torch.Tensor,
                   recal: torch.Tensor | None = None) -> float:
    """Top-1 (%) of a subnet for the training curve: extracted, with BN statistics recalibrated on
    ``recal`` images when given (the supernet's own running statistics mix every subnet and resolution
    it saw, so without recalibration the figure says little)."""
    from edgenas.estimators.train import evaluate_accuracy
    from edgenas.supernets.bn_calibration import recalibrate_bn

    model = net.extract(arch).eval()
    if recal is not None:
        recalibrate_bn(model, recal)
    return evaluate_accuracy(model, x, y)


def train_supernet(
    space: MBV3Space,
    data: Dataset,
    out: str | Path,
    config: ShrinkConfig | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train an OFA supernet with the schedule of ``config`` (progressive shrinking or joint) on ``device``
    (e.g. ``"cuda"``; checkpoints hold CPU-loadable tensors either way, and a run may resume on another
    device); see the module docstring for checkpoints and resuming."""
    from edgenas.augment import random_crop_flip

    config = config or ShrinkConfig()
    device = torch.device(device)
    data = data.to(device)
    phases = config.phases()
    out = Path(out)
    torch.set_num_threads(config.threads)
    net = OFAMobileNetV3(space, data.num_classes, data.in_channels, seed=config.seed)
    built = net.built_for()
    cfg_json = json.dumps(asdict(config), sort_keys=True)
    last = out / "last.pt"
    ref = getattr(space, "ref", None) or space.name
    teacher: OFAMobileNetV3 | None = None
    start_phase, start_epoch, history, resumed, resume_opt = 0, 0, [], None, None
    if last.exists() or (out / "supernet.pt").exists():
        if not resume:
            raise EdgenasError(f"'{out}' already holds a supernet training run; pass --resume to continue it "
                               f"or choose another --out")
        blob = load_checkpoint(last if last.exists() else out / "supernet.pt")
        check_built_for(json.loads(blob["built_for"]), built, blob["path"])
        old = {**asdict(ShrinkConfig()), **json.loads(blob["config"])}  # settings added later: defaults
        if json.dumps(old, sort_keys=True) != cfg_json:
            diff = sorted(k for k in old if old[k] != asdict(config).get(k))
            raise EdgenasError(f"the run in '{out}' was started with other settings ({', '.join(diff)}); "
                               f"resume with the same settings or choose another --out")
        net.load_state_dict(blob["model"])
        if blob.get("teacher") is not None:
            teacher = OFAMobileNetV3(space, data.num_classes, data.in_channels)
            teacher.load_state_dict(blob["teacher"])
        start_phase, start_epoch = int(blob["phase"]), int(blob["epoch"])
        history = json.loads(blob["history"])
        resumed, resume_opt = blob["path"], blob.get("optimizer")
        if progress:
            progress(f"resumed from {blob['path']}: phase {start_phase + 1}/{len(phases)}, epoch {start_epoch}")
    net = net.to(device, memory_format=torch.channels_last)  # ~1.4x faster convolutions on CPU; same results
    if teacher is not None:
        teacher = teacher.to(device, memory_format=torch.channels_last)
    out.mkdir(parents=True, exist_ok=True)
    rng_eval = np.random.default_rng(config.seed)
    ev = rng_eval.choice(len(data.x_val), min(config.eval_images, len(data.x_val)), replace=False)
    smallest = space.validate({d.name: min(d.choices) for d in space.dimensions})
    resolutions = list(space.mbv3.resolutions)
    n_train = len(data.x_train)
    t0 = time.time()

    for pi in range(start_phase, len(phases)):
        phase = phases[pi]
        first_epoch = start_epoch if pi == start_phase else 0
        if phase.name in ("expand",) and first_epoch == 0 and not any(
                p.name == "expand" for p in phases[:pi]):
            net.sort_channels()  # OFA: sort by importance before shrinking the width
            if teacher is not None:
                teacher.sort_channels()
        if phase.name != "full" and phase.name != "joint" and teacher is None and config.kd_ratio > 0:
            teacher = net.clone_active()  # the full network as it is now
            teacher.set_active(teacher.largest())
        named = list(net.named_parameters())
        opt = torch.optim.SGD(
            [{"params": [p for n, p in named if p.ndim > 1 and "transforms" not in n],
              "weight_decay": config.weight_decay},
             {"params": [p for n, p in named if p.ndim <= 1 or "transforms" in n], "weight_decay": 0.0}],
            lr=config.lr * phase.lr_scale, momentum=config.momentum, nesterov=True)
        steps_per_epoch = math.ceil(n_train / config.batch_size)
        total = max(1, phase.epochs * steps_per_epoch)
        base_lr = config.lr * phase.lr_scale
        if pi == start_phase and first_epoch > 0 and resume_opt is not None:
            opt.load_state_dict(resume_opt)
        for epoch in range(first_epoch, phase.epochs):
            net.train()
            if teacher is not None:
                teacher.eval()
            gen = np.random.default_rng([config.seed, pi, epoch])
            torch.manual_seed(int(gen.integers(2**31)))  # dropout: seeded per epoch, so a resumed run is exact
            order = torch.from_numpy(gen.permutation(n_train)).to(device)
            crops = torch.Generator().manual_seed(int(gen.integers(2**31))) if config.augment else None
            losses = []
            for step, i in enumerate(range(0, n_train, config.batch_size)):
                idx = order[i : i + config.batch_size]
                if len(idx) < 2:
                    continue
                lr = base_lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps_per_epoch + step) / total))
                for g in opt.param_groups:
                    g["lr"] = lr
                res = int(resolutions[int(gen.integers(len(resolutions)))])
                x_all, _ = data.at_resolution(res)
                x, y = x_all[idx], data.y_train[idx]
                if crops is not None:
                    x = random_crop_flip(x, crops)
                x = x.contiguous(memory_format=torch.channels_last)
                soft = None
                if teacher is not None and config.kd_ratio > 0 and phase.name != "full":
                    with torch.no_grad():
                        soft = F.softmax(teacher(x), dim=1)
                opt.zero_grad(set_to_none=True)
                n_sub = 1 if phase.name == "full" else config.subnets_per_step
                step_loss = 0.0
                for _ in range(n_sub):
                    arch = sample_subnet(space, phase.elastic, gen)
                    arch["resolution"] = res
                    net.set_active(arch)
                    logits = net(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                    if soft is not None:
                        loss = loss + config.kd_ratio * -(soft * F.log_softmax(logits, 1)).sum(1).mean()
                    loss.backward()
                    step_loss += float(loss.detach()) / n_sub
                opt.step()
                losses.append(step_loss)
            x_tr, x_ev = data.at_resolution(max(resolutions))
            recal = x_tr[: config.eval_images]
            row = {"phase": phase.name, "phase_index": pi, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                   "acc_largest": quick_accuracy(net, net.largest(), x_ev[ev], data.y_val[ev], recal),
                   "acc_smallest": quick_accuracy(net, {**smallest, "resolution": max(resolutions)},
                                                  x_ev[ev], data.y_val[ev], recal),
                   "seconds": time.time() - t0}
            history.append(row)
            done_phase = epoch + 1 == phase.epochs
            state = {
                "format": FORMAT, "built_for": json.dumps(built, sort_keys=True), "config": cfg_json, "space_ref": ref,
                "phase": pi + 1 if done_phase else pi, "epoch": 0 if done_phase else epoch + 1,
                "model": net.state_dict(), "teacher": teacher.state_dict() if teacher is not None else None,
                "optimizer": None if done_phase else opt.state_dict(), "history": json.dumps(history),
            }
            save_checkpoint(last, state)
            if done_phase:
                save_checkpoint(out / f"phase{pi + 1}_{phase.name}.pt", state)
            if progress:
                progress(f"phase {pi + 1}/{len(phases)} {phase.name} epoch {epoch + 1}/{phase.epochs}: "
                         f"loss {row['loss']:.3f}, largest {row['acc_largest']:.1f}%, "
                         f"smallest {row['acc_smallest']:.1f}% (BN recalibrated), {row['seconds']:.0f} s")
        net.set_active(net.largest())
    final = {
        "format": FORMAT, "built_for": json.dumps(built, sort_keys=True), "config": cfg_json, "space_ref": ref,
        "phase": len(phases), "epoch": 0, "model": net.state_dict(), "teacher": None, "optimizer": None,
        "history": json.dumps(history),
    }
    save_checkpoint(out / "supernet.pt", final)
    atomic_write_json(out / "history.json", {"config": asdict(config), "built_for": built, "history": history})
    return TrainResult(out, net.eval(), history, resumed)
