"""#params: the number of trainable parameters, the baseline every zero-cost proxy must beat.

Abdelfattah et al. (ICLR 2021) and Ning et al., "Evaluating Efficient Performance Estimators of Neural
Architectures" (NeurIPS 2021) report it as a surprisingly strong ranker on NAS-Bench-201.
"""

from __future__ import annotations

from edgenas.estimators.proxies.base import Batch, ModelLike, model_to_read


def num_params(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """Trainable parameters (higher is better). Reads neither the batch nor the seed."""
    net = model_to_read(model)
    return float(sum(p.numel() for p in net.parameters() if p.requires_grad))
