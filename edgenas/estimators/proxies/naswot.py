"""NASWOT: how differently a batch's inputs switch the network's ReLUs on and off at initialisation.

Mellor et al., "Neural Architecture Search without Training" (ICML 2021). Each input gets a binary code
per rectified layer, ``c = [pre-activation > 0]``; the kernel ``K[i, j]`` counts, summed over layers, the
units where inputs ``i`` and ``j`` agree (``c_i c_j + (1 - c_i)(1 - c_j)``, i.e. units minus Hamming
distance), and the score is ``log |det K|``. Codes are read at the input of every ReLU-family module
(ReLU, ReLU6, LeakyReLU, and the piecewise-linear or smooth activations whose "on" region is also
``x > 0``: Hardswish, GELU, SiLU, ELU), in training mode.

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


def naswot(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``log |det K|`` of the activation-code kernel (higher is better)."""
    x, _ = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))
        n = len(x)
        kernel = torch.zeros((n, n), dtype=torch.float64)

        def on_input(module: nn.Module, inputs: Any) -> None:
            codes = (inputs[0].detach().reshape(n, -1) > 0).double()
            kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

        hooks = [m.register_forward_pre_hook(on_input) for m in net.modules() if isinstance(m, RELU_FAMILY)]
        if not hooks:
            raise EdgenasError("proxy 'naswot' needs ReLU-family activation modules (nn.ReLU, ...)")

        def compute() -> float:
            try:
                with torch.no_grad():
                    logits(net, x)
            finally:
                for h in hooks:
                    h.remove()
            _, logdet = np.linalg.slogdet(kernel.numpy())
            return float(logdet)

        return run_forward(compute, "naswot")
