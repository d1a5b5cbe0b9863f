"""SNIP: connection sensitivity at initialisation, summed over the network.

Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity" (ICLR 2019); as a
network-level proxy in Abdelfattah et al. (ICLR 2021): ``sum over weights of |dL/dw * w|`` for
convolutions and linear layers, cross-entropy on one batch (the gradient of the loss with respect to a
multiplicative mask of ones equals ``dL/dw * w``).
"""

from __future__ import annotations

import torch

from edgenas.estimators.proxies.base import Batch, ModelLike, weight_gradient_sum


def snip(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum |w * dL/dw|`` (higher is better)."""
    return weight_gradient_sum(model, batch, seed, "snip", lambda w, g: (g * w).abs().sum(dtype=torch.float64))
