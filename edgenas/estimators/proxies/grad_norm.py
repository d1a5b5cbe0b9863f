"""grad_norm: the summed L2 norms of the loss gradients of every layer's weights at initialisation.

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021), section 3: the simplest
gradient-based saliency, ``sum over layers of ||dL/dW_l||_2`` for convolutions and linear layers, with
cross-entropy on one batch.
"""

from __future__ import annotations

from edgenas.estimators.proxies.base import Batch, ModelLike, weight_gradient_sum


def grad_norm(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum_l ||dL/dW_l||_2`` (higher is better)."""
    return weight_gradient_sum(model, batch, seed, "grad_norm", lambda w, g: g.double().norm())
