"""Parameter and multiply-accumulate counts of a network.

MACs are counted with PyTorch's own ``torch.utils.flop_counter`` on one forward pass at batch 1 (it
counts convolutions and matrix products, i.e. what dominates a CNN; one MAC is two FLOPs).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a ``1 x C x R x R`` input."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    x = torch.zeros(1, in_channels, resolution, resolution)
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for m, training in modes:  # every module's own mode back, as it was
            m.training = training
    return int(counter.get_total_flops() // 2)
