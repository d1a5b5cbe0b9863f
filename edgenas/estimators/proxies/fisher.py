"""Fisher: the summed diagonal Fisher information of every channel's activation.

Theis et al., "Faster gaze prediction with dense networks and Fisher pruning" (2018) and Turner et al.,
"BlockSwap" (ICLR 2020); as a network-level proxy in Abdelfattah et al. (ICLR 2021). For the output
``a`` of every convolution and linear layer and the loss gradient ``g = dL/da``, channel ``c`` scores
``1/2 * mean over samples of (sum over positions of a * g)^2``; the proxy sums over channels and layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgenas.estimators.proxies.base import (
    Batch,
    ModelLike,
    classification_loss,
    fresh_model,
    run_forward,
    seeded,
    train_mode,
    weight_layers,
)


def fisher(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum_l sum_c 1/2 mean_n (sum_hw a * dL/da)^2`` (higher is better)."""
    x, y = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))
        totals: list[torch.Tensor] = []

        def on_output(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            if not out.requires_grad:
                return
            act = out.detach()

            def on_grad(grad: torch.Tensor) -> None:
                prod = act * grad
                per_channel = prod.sum(tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
                totals.append(0.5 * per_channel.double().pow(2).mean(0).sum())

            out.register_hook(on_grad)

        handles = [layer.register_forward_hook(on_output) for layer in weight_layers(net)]

        def compute() -> float:
            try:
                classification_loss(net, x, y).backward()
            finally:
                for h in handles:
                    h.remove()
            return float(sum(totals)) if totals else 0.0

        return run_forward(compute, "fisher")
