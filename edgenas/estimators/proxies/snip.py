"""SNIP: connection sensitivity at initialisation, summed over the network.

Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity" (ICLR 2019); as a
network-level proxy in Abdelfattah et al. (ICLR 2021): ``sum over weights of |dL/dw * w|`` for
convolutions and linear layers, cross-entropy on one batch (the gradient of the loss with respect to a
multiplicative mask of ones equals ``dL/dw * w``).
"""

from __future__ import annotations

import torch

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


def snip(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum |w * dL/dw|`` (higher is better)."""
    x, y = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))

        def compute() -> float:
            classification_loss(net, x, y).backward()
            total = torch.zeros((), dtype=torch.float64)
            for layer in weight_layers(net):
                if layer.weight.grad is not None:
                    total += (layer.weight.grad * layer.weight.detach()).abs().sum(dtype=torch.float64)
            return float(total)

        return run_forward(compute, "snip")
