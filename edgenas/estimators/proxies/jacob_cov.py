"""jacob_cov: how decorrelated the input Jacobians of a batch are at initialisation.

Mellor et al., "Neural Architecture Search without Training" (arXiv:2006.04647v1, 2020), the score used
by Abdelfattah et al. (ICLR 2021) under the name ``jacob_cov``. ``J`` holds, per input, the gradient of
the sum of the network's outputs with respect to that input (one backward pass). With ``C`` the
correlation matrix of the rows of ``J`` and ``v`` its eigenvalues, the score is
``-sum_i [log(v_i + k) + 1 / (v_i + k)]`` with ``k = 1e-5``: highest when the inputs' Jacobians are
uncorrelated (``C`` near the identity).
"""

from __future__ import annotations

import numpy as np
import torch

from edgenas.estimators.proxies.base import (
    Batch,
    ModelLike,
    fresh_model,
    logits,
    run_forward,
    seeded,
    train_mode,
)

K = 1e-5


def correlation_score(jacobian: np.ndarray, k: float = K) -> float:
    """The score of a Jacobian matrix (one row per input); NaN when a row is constant."""
    with np.errstate(all="ignore"):
        corr = np.corrcoef(jacobian.astype(np.float64))
        if not np.all(np.isfinite(corr)):
            return float("nan")
        v = np.linalg.eigvalsh(corr)
        return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def jacob_cov(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """The Jacobian-correlation score (higher is better)."""
    x, _ = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))

        def compute() -> float:
            inp = x.detach().clone().requires_grad_(True)
            out = logits(net, inp)
            out.backward(torch.ones_like(out))
            if inp.grad is None:
                return float("nan")
            return correlation_score(inp.grad.reshape(len(inp), -1).numpy())

        return run_forward(compute, "jacob_cov")

