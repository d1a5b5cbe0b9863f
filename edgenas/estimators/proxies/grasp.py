"""GraSP: gradient signal preservation, summed over the network.

Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow" (ICLR 2020); as a
network-level proxy in Abdelfattah et al. (ICLR 2021): ``sum over weights of -w * (H g)`` where ``g`` is
the loss gradient and ``H`` the Hessian of the loss with respect to the conv/linear weights. ``H g`` is a
Hessian-vector product, computed one of two ways (``hvp=``):

* ``exact`` (default): the gradient of ``<g (held constant), dL/dw>`` (double backward). Some activations
  (hard-sigmoid, hard-swish) have no double backward in PyTorch; for networks that use them ``H g`` is
  then a central finite difference of the gradient in double precision,
  ``(grad L(w + e g) - grad L(w - e g)) / 2e`` with ``e = 1e-4 ||w|| / ||g||``.
* ``frozen`` (opt-in, an approximation): a forward difference ``(grad L(w + e g) - grad L(w)) / e``,
  ``e = 1e-5 ||w|| / ||g||``, in the network's own precision, with every activation held on the piece it
  was on at ``w`` (:mod:`edgenas.estimators.proxies.activation_pattern`): the difference of the smooth
  piece whose Hessian double backward computes, so it converges to the exact product without the kinks'
  jumps. One extra forward and backward pass instead of a double backward, about three times cheaper on
  NB201 cells (batch 64, one CPU thread). In float32 it is within about 1 % of the exact score for the
  median NB201 cell, but on ill-conditioned cells (long conv chains without a skip, large gradients) the
  loss is so curved that no float32 step works and the score can be off by several times or change sign;
  measured agreement over 1,000 cells in docs/proxies.md. Needs every kink of the network in a freezable
  activation module (:func:`~edgenas.estimators.proxies.activation_pattern.can_freeze`).
"""

from __future__ import annotations

import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies.activation_pattern import FrozenActivationPattern, can_freeze
from edgenas.estimators.proxies.base import (
    Batch,
    ModelLike,
    channels_last,
    classification_loss,
    fresh_model,
    run_forward,
    seeded,
    train_mode,
    weight_layers,
)

FD_STEP = 1e-4
FROZEN_STEP = 1e-5
HVP_METHODS = ("exact", "frozen")


def _gradients(net: nn.Module, weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               create_graph: bool = False) -> list[torch.Tensor]:
    loss = classification_loss(net, x, y)
    g = torch.autograd.grad(loss, weights, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(w) if gi is None else gi for w, gi in zip(weights, g, strict=True)]


def _hvp_exact(net: nn.Module, weights: list[torch.Tensor], g: list[torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> list[torch.Tensor]:
    g_graph = _gradients(net, weights, x, y, create_graph=True)
    z = sum((gi * gg).sum() for gi, gg in zip(g, g_graph, strict=True) if gg.requires_grad)
    if not isinstance(z, torch.Tensor):
        return [torch.zeros_like(w) for w in weights]
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return [torch.zeros_like(w) if h is None else h for w, h in zip(weights, hg, strict=True)]


def _hvp_finite_difference(net: nn.Module, weights: list[torch.Tensor], g: list[torch.Tensor],
                           x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    net.double()
    xd = x.double()
    gd = [gi.double() for gi in g]
    w_norm = torch.sqrt(sum((w.detach().double() ** 2).sum() for w in weights))
    g_norm = torch.sqrt(sum((gi**2).sum() for gi in gd))
    if float(g_norm) == 0.0:
        return [torch.zeros_like(w) for w in weights]
    step = FD_STEP * float(w_norm) / float(g_norm)
    originals = [w.detach().clone() for w in weights]

    def grads_at(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for w, w0, gi in zip(weights, originals, gd, strict=True):
                w.copy_(w0 + sign * step * gi)
        return [gi.detach() for gi in _gradients(net, weights, xd, y)]

    plus, minus = grads_at(1.0), grads_at(-1.0)
    with torch.no_grad():
        for w, w0 in zip(weights, originals, strict=True):
            w.copy_(w0)
    return [(p - m) / (2 * step) for p, m in zip(plus, minus, strict=True)]


def resolve_hvp(net: nn.Module, hvp: str) -> str:
    """``hvp`` checked against ``net``: a known method, and ``frozen`` only where :func:`can_freeze` allows it."""
    if hvp not in HVP_METHODS:
        raise EdgenasError(f"unknown Hessian-vector product method '{hvp}'; use one of {', '.join(HVP_METHODS)}")
    if hvp == "frozen" and not can_freeze(net):
        raise EdgenasError("hvp='frozen' needs every activation of the network in a freezable module "
                           "(nn.ReLU, ReLU6, Hardsigmoid, Hardswish, not in place); use hvp='exact'")
    return hvp


def hvp_frozen_difference(net: nn.Module, weights: list[torch.Tensor], g: list[torch.Tensor],
                          pattern: FrozenActivationPattern, x: torch.Tensor, y: torch.Tensor,
                          step: float = FROZEN_STEP) -> list[torch.Tensor]:
    """``(grad L(w + e g) - g) / e`` with the activation pattern that ``pattern`` recorded at ``w`` (the
    forward pass that gave ``g``); the weights are restored exactly afterwards."""
    w_norm = torch.sqrt(sum((w.detach().double() ** 2).sum() for w in weights))
    g_norm = torch.sqrt(sum((gi.double() ** 2).sum() for gi in g))
    if float(g_norm) == 0.0:
        return [torch.zeros_like(w) for w in weights]
    e = step * float(w_norm) / float(g_norm)
    originals = [w.detach().clone() for w in weights]
    pattern.freeze()
    try:
        with torch.no_grad():
            for w, gi in zip(weights, g, strict=True):
                w.add_(gi, alpha=e)
        moved = [gi.detach() for gi in _gradients(net, weights, x, y)]
    finally:
        with torch.no_grad():
            for w, w0 in zip(weights, originals, strict=True):
                w.copy_(w0)
    return [(m - gi) / e for m, gi in zip(moved, g, strict=True)]


def grasp(model: ModelLike, batch: Batch, seed: int = 0, hvp: str = "exact") -> float:
    """``sum -w * (H g)`` (higher is better, as ranked by Abdelfattah et al.)."""
    x, y = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))
        method = resolve_hvp(net, hvp)
        if method == "frozen":  # channels-last slows a double backward down and speeds the rest up
            net = channels_last(net)
        weights = [layer.weight for layer in weight_layers(net)]

        def compute() -> float:
            if method == "frozen":
                with FrozenActivationPattern(net) as pattern:
                    g = [gi.detach() for gi in _gradients(net, weights, x, y)]
                    return grasp_score(weights, hvp_frozen_difference(net, weights, g, pattern, x, y))
            g = [gi.detach() for gi in _gradients(net, weights, x, y)]
            try:
                hg = _hvp_exact(net, weights, g, x, y)
            except RuntimeError as exc:
                if "not implemented" not in str(exc):
                    raise
                hg = _hvp_finite_difference(net, weights, g, x, y)
            return grasp_score(weights, hg)

        return run_forward(compute, "grasp")


def grasp_score(weights: list[torch.Tensor], hg: list[torch.Tensor]) -> float:
    """``sum -w * (H g)`` in double precision."""
    total = torch.zeros((), dtype=torch.float64)
    for w, h in zip(weights, hg, strict=True):
        total += (-w.detach().double() * h.double()).sum()
    return float(total)
