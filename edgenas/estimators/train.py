"""Accuracy by training from scratch: SGD with Nesterov momentum and a cosine learning-rate schedule
(Loshchilov & Hutter, ICLR 2017), label smoothing (Szegedy et al., CVPR 2016), validation top-1 accuracy.

Deterministic: the network's initial weights come from the seed, and so does the batch order. Trained
weights can be kept (``weights_dir``) so that ``edgenas export`` reuses them instead of training again.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.data import Dataset
from edgenas.evaluators import Evaluator
from edgenas.models.blocks import zero_last_gamma
from edgenas.spaces.base import SearchSpace


@dataclass
class TrainRecipe:
    """Hyper-parameters of training from scratch."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    threads: int = 1  # tiny networks gain little from more, and oversubscribed cores lose a lot
    augment: bool = False  # random crops of padded images and horizontal flips (edgenas.augment)
    # A network trained from scratch starts with its residual blocks as the identity (zero-gamma, Goyal et al.
    # 2017; edgenas.models.blocks.zero_last_gamma). Without it a 3-epoch recipe ranks deep networks below
    # shallow ones of the same latency (docs/gradient_nas.md, "Zero-gamma").
    zero_last_gamma: bool = True


def weights_file(weights_dir: str | os.PathLike[str], space: SearchSpace, arch: Mapping[str, Any]) -> Path:
    """Where the trained weights of ``arch`` are kept (named by a hash of its key; in a co-design space, of its
    network's key: the accelerator does not change the weights)."""
    key = space.network_key(arch) if hasattr(space, "network_key") else space.key(arch)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(weights_dir) / f"{digest}.pt"


def save_weights(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Write a model's state dict to ``path`` atomically (read back with ``weights_only=True``)."""
    import io

    from edgenas.io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent (batches are moved to the model's device)."""
    return accuracy_of(top1_hits(model, x, y, batch_size))


def accuracy_of(hits: np.ndarray) -> float:
    """Top-1 accuracy in percent from per-image hits (0 for no images)."""
    return 100.0 * int(np.count_nonzero(hits)) / max(1, len(hits))


@torch.no_grad()
def top1_hits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Per image, whether the model's top-1 class is the label (booleans, on the CPU), in eval mode."""
    model.eval()
    device = model_device(model)
    hits = [(model(x[i : i + batch_size].to(device)).argmax(1) == y[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(x), batch_size)]
    return torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (a CUDA GPU when PyTorch sees one, else the CPU),
    checked: a one-line error for an unknown name or a device this PyTorch build cannot use."""
    from edgenas.errors import EdgenasError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EdgenasError(f"unknown device '{name}'; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EdgenasError(f"device '{name}': this PyTorch build sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EdgenasError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise EdgenasError(f"device '{name}': MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise EdgenasError(f"device '{name}' is not supported; use cpu, cuda, cuda:N, mps or auto")
    return device


def train_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TrainRecipe, seed: int = 0
) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` with ``recipe``; returns it in eval mode. Batches are moved
    to the model's device (put ``x`` and ``y`` there first to avoid the copies)."""
    from edgenas.augment import random_crop_flip

    torch.set_num_threads(recipe.threads)
    device = model_device(model)
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": params_decay, "weight_decay": recipe.weight_decay},
         {"params": params_no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
    )
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total = max(1, recipe.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: seed it locally
        torch.manual_seed(seed)
        for _ in range(recipe.epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), recipe.batch_size):
                idx = order[i : i + recipe.batch_size]
                if len(idx) < 2:  # batch norm needs two samples
                    continue
                xb, yb = x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)
                if recipe.augment:
                    xb = random_crop_flip(xb, gen).contiguous()
                loss = F.cross_entropy(model(xb), yb, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


class TrainEstimator(Evaluator):
    """Validation accuracy (%) after training the architecture from scratch for a few epochs."""

    name, unit, direction, cheap = "accuracy", "%", "maximize", False

    def __init__(
        self,
        space: SearchSpace,
        data: Dataset,
        epochs: int = 2,
        batch_size: int = 32,
        seed: int = 0,
        weights_dir: str | os.PathLike[str] | None = None,
        recipe: TrainRecipe | None = None,
    ) -> None:
        self.space, self.data, self.seed, self.weights_dir = space, data, seed, weights_dir
        self.recipe = recipe or TrainRecipe(epochs=epochs, batch_size=batch_size)

    def fit(self, arch: Mapping[str, Any]) -> tuple[nn.Module, float]:
        """Build, train and validate ``arch``; returns the trained model and its accuracy."""
        arch = self.space.validate(arch)
        model = self.space.build(arch, self.data.num_classes, self.data.in_channels, seed=self.seed)
        if self.recipe.zero_last_gamma:
            zero_last_gamma(model)
        x_train, x_val = self.data.at_resolution(self.space.resolution(arch))
        train_model(model, x_train, self.data.y_train, self.recipe, self.seed)
        return model, evaluate_accuracy(model, x_val, self.data.y_val)

    def __call__(self, arch: Mapping[str, Any]) -> float:
        model, acc = self.fit(arch)
        if self.weights_dir is not None:
            save_weights(model.state_dict(), weights_file(self.weights_dir, self.space, arch))
        return acc

    def describe(self) -> str:
        return f"accuracy [%] after training {self.recipe.epochs} epoch(s) from scratch on {self.data.name}"
