"""GraSP: gradient signal preservation, summed over the network.

Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow" (ICLR 2020); as a
network-level proxy in Abdelfattah et al. (ICLR 2021): ``sum over weights of -w * (H g)`` where ``g`` is
the loss gradient and ``H`` the Hessian of the loss with respect to the conv/linear weights. ``H g`` is a
Hessian-vector product: the gradient of ``<g (held constant), dL/dw>`` (double backward).

Some activations (hard-sigmoid, hard-swish) have no double backward in PyTorch; for networks that use
them ``H g`` is taken by a central finite difference of the gradient in double precision,
``(grad L(w + e g) - grad L(w - e g)) / 2e`` with ``e = 1e-4 ||w|| / ||g||``.
"""

from __future__ import annotations

import torch
from torch import nn

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

FD_STEP = 1e-4


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


def grasp(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """``sum -w * (H g)`` (higher is better, as ranked by Abdelfattah et al.)."""
    x, y = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))
        weights = [layer.weight for layer in weight_layers(net)]

        def compute() -> float:
            g = [gi.detach() for gi in _gradients(net, weights, x, y)]
            try:
                hg = _hvp_exact(net, weights, g, x, y)
            except RuntimeError as exc:
                if "not implemented" not in str(exc):
                    raise
                hg = _hvp_finite_difference(net, weights, g, x, y)
            total = torch.zeros((), dtype=torch.float64)
            for w, h in zip(weights, hg, strict=True):
                total += (-w.detach().double() * h.double()).sum()
            return float(total)

        return run_forward(compute, "grasp")
