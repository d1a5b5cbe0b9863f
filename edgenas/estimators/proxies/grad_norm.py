"""grad_norm: the summed L2 norms of the loss gradients of every layer's weights at initialisation.

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021), section 3: the simplest
gradient-based saliency, ``sum over layers of ||dL/dW_l||_2`` for convolutions and linear layers, with
cross-entropy on one batch.
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


def grad_norm(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum_l ||dL/dW_l||_2`` (higher is better)."""
    x, y = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))

        def compute() -> float:
            classification_loss(net, x, y).backward()
            total = torch.zeros((), dtype=torch.float64)
            for layer in weight_layers(net):
                if layer.weight.grad is not None:
                    total += layer.weight.grad.double().norm()
            return float(total)

        return run_forward(compute, "grad_norm")
