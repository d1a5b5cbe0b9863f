"""Batch-norm recalibration of a subnet extracted from a supernet.

The BN statistics a supernet accumulates during training mix many subnets, so an extracted subnet's
running mean and variance are wrong for it; Once-for-All (Cai et al., ICLR 2020) recomputes them on a
few thousand training images before evaluation (also Yu & Huang, "Universally Slimmable Networks",
ICCV 2019, section 3.3). :func:`recalibrate_bn` does it exactly: one pass over ``N`` images in which
every BN normalises with its batch's statistics (as in training), while the per-channel sum and sum of
squares of every BN's input are accumulated in float64; afterwards ``running_mean`` is the mean over all
``N x H x W`` positions and ``running_var`` their unbiased variance -- what a direct computation over the
concatenated inputs gives, independent of the batch size's effect on a moving average.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Recompute every BatchNorm2d's running statistics of ``model`` on ``images`` (moved batch by batch to
    the model's device); returns it in eval mode."""
    from edgenas.estimators.train import model_device

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return model.eval()
    sums: dict[nn.Module, list] = {bn: [0, None, None] for bn in bns}

    def hook(bn: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().to(torch.float64)
        acc = sums[bn]
        acc[0] += x.shape[0] * x.shape[2] * x.shape[3]
        s, q = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        acc[1] = s if acc[1] is None else acc[1] + s
        acc[2] = q if acc[2] is None else acc[2] + q

    device = model_device(model)
    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    was_training = model.training
    try:
        model.eval()
        for bn in bns:
            bn.train()  # normalise with the batch's statistics during the pass
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
    for bn in bns:
        n, s, q = sums[bn]
        mean = s / n
        var = (q / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
    model.eval()
    del was_training
    return model
