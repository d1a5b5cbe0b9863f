"""A minimal, seeded training loop: the study's fallback where the project's ``train`` estimator is absent.

SGD with Nesterov momentum 0.9, weight decay 5e-5, a cosine learning-rate schedule from 0.05, batches of
64, label smoothing 0.1. Batch-norm statistics are recalibrated on the training set before evaluation (a
short run leaves the running averages far from the final weights' statistics). Returns top-1 accuracy (%)
on the data set's validation split. Deliberately short (a few epochs): the correlation study needs a
ranking of the sampled architectures, not their best accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from edgenas.spaces.base import SearchSpace


class QuickTrainer:
    """``trainer(arch) -> validation accuracy (%)`` after ``epochs`` epochs from the seeded init."""

    def __init__(self, space: SearchSpace, data: Any, epochs: int = 3, seed: int = 0, batch_size: int = 64,
                 lr: float = 0.05) -> None:
        self.space, self.data, self.epochs, self.seed = space, data, epochs, seed
        self.batch_size, self.lr = batch_size, lr

    def __call__(self, arch: Mapping[str, Any]) -> float:
        arch = self.space.validate(arch)
        x_train, x_val = self.data.at_resolution(self.space.resolution(arch))
        y_train, y_val = self.data.y_train, self.data.y_val
        model = self.space.build(arch, self.data.num_classes, self.data.in_channels, self.seed)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
        steps = self.epochs * max(1, -(-len(x_train) // self.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model.train()
            for _ in range(self.epochs):
                order = torch.randperm(len(x_train), generator=gen)
                for idx in order.split(self.batch_size):
                    if len(idx) < 2:
                        continue
                    loss = F.cross_entropy(model(x_train[idx]), y_train[idx], label_smoothing=0.1)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        _recalibrate_batchnorm(model, x_train, self.batch_size)
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in zip(x_val.split(256), y_val.split(256), strict=True):
                correct += int((model(xb).argmax(1) == yb).sum())
        return 100.0 * correct / max(1, len(y_val))


def _recalibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor, batch_size: int,
                           limit: int = 2000) -> None:
    """Reset every BN layer's running statistics to their exact average over (up to ``limit``) inputs."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for xb in x[:limit].split(batch_size):
            if len(xb) > 1:
                model(xb)
