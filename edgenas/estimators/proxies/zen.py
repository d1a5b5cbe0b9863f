"""Zen-score: the expressivity of a network measured at a Gaussian random initialisation, data-free.

Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition" (ICCV 2021), section 4.
All conv/linear weights are redrawn from N(0, 1) (biases zero, BN scale one and shift zero), the input is
Gaussian, ``x ~ N(0, 1)`` with the batch's shape, and with ``x' = x + alpha * eps`` (``eps ~ N(0, 1)``,
``alpha = 0.01``) the score is

    Zen = log E ||f(x) - f(x')||_F  +  sum over BN layers i of log sqrt(mean_j sigma_ij^2)

where ``f`` is the pre-global-pooling feature map and ``sigma_ij^2`` the variance that BN layer ``i``
computes for channel ``j`` on ``x`` (BN in training mode, as the paper does). The score is averaged over
``repeats`` draws. It needs batch norm: the second term is the paper's correction for BN's rescaling.

The feature map is ``model.features(x)`` where the model has that method (edgenas's builders do).
Otherwise it is the input of the model's last ``nn.AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` module, and
for a model with neither, its output (a weaker variant: the head is then part of ``f``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgenas.estimators.proxies.base import (
    BATCHNORMS,
    WEIGHT_LAYERS,
    Batch,
    ModelLike,
    channels_last,
    fresh_model,
    logits,
    require_batchnorm,
    run_forward,
    seeded,
    train_mode,
)

ALPHA = 0.01


def gaussian_init(model: nn.Module) -> None:
    """Zen-NAS's initialisation: N(0, 1) conv/linear weights, zero biases, identity batch norm."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WEIGHT_LAYERS):
                m.weight.normal_()
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, BATCHNORMS) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def _log(v: float) -> float:
    """``log v`` with ``log 0 = -inf`` and NaN for NaN or negative values (never an exception)."""
    if v > 0:
        return math.log(v)
    return float("-inf") if v == 0 else float("nan")


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pre-global-pooling feature map of ``model`` on ``x`` (see the module docstring)."""
    features = getattr(model, "features", None)
    if callable(features) and not isinstance(features, nn.Module):
        return features(x)
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d)]
    if not pools:
        return logits(model, x)
    seen: list[torch.Tensor] = []
    handle = pools[-1].register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    try:
        out = logits(model, x)
    finally:
        handle.remove()
    return seen[-1] if seen else out


def _record_batch_variance(bns: list[nn.Module]) -> None:
    """Make every BN layer that tracks statistics store the next batch's own variance as its running
    variance (momentum 1): what the layer computes anyway, read back instead of computed a second time."""
    for bn in bns:
        if bn.track_running_stats:
            bn.reset_running_stats()
            bn.momentum = 1.0


def _one_draw(net: nn.Module, bns: list[nn.Module], x_shape: tuple[int, ...], alpha: float) -> float:
    """``z1 + z2`` for one Gaussian input and perturbation (see the module docstring)."""
    x = torch.randn(x_shape)
    eps = torch.randn(x_shape)
    variances: list[float | tuple[nn.Module, int]] = []
    pending: dict[nn.Module, int] = {}  # BN layer -> its entry still to be read from running_var

    def on_bn(module: nn.Module, inputs: Any) -> None:
        t = inputs[0].detach()
        per_channel = t.numel() // t.shape[1]
        if module.track_running_stats:  # read after the pass: running_var = the batch's unbiased variance
            if module in pending:  # a layer applied again: read its previous call's variance before it goes
                i = pending[module]
                variances[i] = _biased_mean_variance(variances[i])
            pending[module] = len(variances)
            variances.append((module, per_channel))
        else:
            variances.append(float(t.var(dim=[0, *range(2, t.dim())], unbiased=False).double().mean()))

    hooks = [bn.register_forward_pre_hook(on_bn) for bn in bns]
    try:
        with torch.no_grad():
            f1 = feature_map(net, x)
    finally:
        for h in hooks:
            h.remove()
    z2 = sum(0.5 * _log(_biased_mean_variance(v)) for v in variances)
    with torch.no_grad():
        f2 = feature_map(net, x + alpha * eps)
    diff = float((f1 - f2).double().reshape(len(f1), -1).norm(dim=1).mean())
    return _log(diff) + z2


def _biased_mean_variance(v: float | tuple[nn.Module, int]) -> float:
    """The mean over channels of a BN layer's batch variance (biased, as BN normalises with)."""
    if isinstance(v, float):
        return v
    bn, n = v
    return float(bn.running_var.double().mean()) * (n - 1) / n if n > 1 else 0.0


def zen_score(model: ModelLike, batch: Batch, seed: int = 0, repeats: int = 1, alpha: float = ALPHA) -> float:
    """The Zen-score (higher is better); reads only the batch's shape."""
    x_shape = tuple(batch[0].shape)
    with seeded(seed):
        # channels-last weights: the same function, about twice as fast on CPU for these small convs
        net = channels_last(train_mode(fresh_model(model)))
        require_batchnorm(net, "zen")
        gaussian_init(net)
        bns = [m for m in net.modules() if isinstance(m, BATCHNORMS)]
        _record_batch_variance(bns)

        def compute() -> float:
            scores = [_one_draw(net, bns, x_shape, alpha) for _ in range(repeats)]
            return float(sum(scores) / len(scores))

        return run_forward(compute, "zen")
