"""SynFlow: synaptic saliency of a linearised copy of the network, data-free.

Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic flow"
(NeurIPS 2020); as a network-level proxy in Abdelfattah et al. (ICLR 2021). Every parameter is replaced
by its absolute value, batch norm is removed (as Abdelfattah et al. score it: with batch statistics an
all-ones input would normalise to zero), the network runs in double precision on one all-ones input
``R = sum(f(1))``, and the score is ``sum over conv/linear weights of |w * dR/dw|``. It reads only the
batch's shape.
"""

from __future__ import annotations

import torch
from torch import nn

from edgenas.estimators.proxies.base import (
    BATCHNORMS,
    Batch,
    ModelLike,
    fresh_model,
    logits,
    run_forward,
    seeded,
    weight_layers,
)


def remove_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``model`` by an identity, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BATCHNORMS):
                setattr(parent, name, nn.Identity())
    return model


def synflow(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum |w * dR/dw|`` on the linearised, BN-free network (higher is better)."""
    x, _ = batch
    with seeded(seed):
        net = remove_batchnorm(fresh_model(model)).double().eval()

        def compute() -> float:
            with torch.no_grad():
                for p in net.parameters():
                    p.abs_()
            ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64)
            logits(net, ones).sum().backward()
            total = torch.zeros((), dtype=torch.float64)
            for layer in weight_layers(net):
                if layer.weight.grad is not None:
                    total += (layer.weight.detach() * layer.weight.grad).abs().sum()
            return float(total)

        return run_forward(compute, "synflow")
