"""NASWOT: how differently a batch's inputs switch the network's ReLUs on and off at initialisation.

Mellor et al., "Neural Architecture Search without Training" (ICML 2021). Each input gets a binary code
per rectified layer, ``c = [pre-activation > 0]``; the kernel ``K[i, j]`` counts, summed over layers, the
units where inputs ``i`` and ``j`` agree (``c_i c_j + (1 - c_i)(1 - c_j)``, i.e. units minus Hamming
distance), and the score is ``log |det K|``. Codes are read at the input of every ReLU-family module
(ReLU, ReLU6, LeakyReLU, and the activations whose "on" region is also ``x > 0``: Hardswish, GELU, SiLU,
ELU), in training mode.

Because codes depend only on signs, the score is invariant to a positive rescaling of the weights
(exactly without batch norm when biases are zero; up to BN's epsilon with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies.base import (
    RELU_FAMILY,
    Batch,
    ModelLike,
    fresh_model,
    logits,
    run_forward,
    seeded,
    train_mode,
)


class CodeKernel:
    """Accumulates NASWOT's kernel from forward pre-hooks on a network's ReLU-family modules.

    ``K = sum_layers [c c^T + (1 - c)(1 - c)^T] = sum_layers [2 c c^T - s 1^T - 1 s^T + D]`` with ``s`` the
    row sums of ``c`` and ``D`` the layer's units: one matrix product per layer, exact in float32 (integer
    counts below 2^24), accumulated in float64. A tensor that feeds several ReLUs (NB201's cells apply one
    to every edge leaving a node) counts once per ReLU, as in the definition, but is encoded once.
    """

    def __init__(self, net: nn.Module, n: int) -> None:
        self.n = n
        self.kernel = torch.zeros((n, n), dtype=torch.float64)
        self._seen: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self._hooks = [m.register_forward_pre_hook(self._on_input) for m in net.modules()
                       if isinstance(m, RELU_FAMILY)]
        if not self._hooks:
            raise EdgenasError("proxy 'naswot' needs ReLU-family activation modules (nn.ReLU, ...)")

    def _on_input(self, module: nn.Module, inputs: Any) -> None:
        t = inputs[0]
        cached = self._seen.get(id(t))
        if cached is None or cached[0] is not t or cached[1] != t._version:  # new tensor or changed in place
            codes = (t.detach().reshape(self.n, -1) > 0).float()
            s = codes.sum(1, keepdim=True)
            contribution = (2.0 * codes @ codes.T - s - s.T + codes.shape[1]).double()
            cached = (t, t._version, contribution)
            self._seen[id(t)] = cached
        self.kernel += cached[2]

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._seen.clear()

    def score(self) -> float:
        """``log |det K|`` (``-inf`` when ``K`` is singular)."""
        _, logdet = np.linalg.slogdet(self.kernel.numpy())
        return float(logdet)


def naswot(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``log |det K|`` of the activation-code kernel (higher is better)."""
    x, _ = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))
        codes = CodeKernel(net, len(x))

        def compute() -> float:
            try:
                with torch.no_grad():
                    logits(net, x)
            finally:
                codes.remove()
            return codes.score()

        return run_forward(compute, "naswot")
