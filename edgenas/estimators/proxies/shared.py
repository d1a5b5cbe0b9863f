"""Six proxies from one forward pass: the fast path of the correlation study and of batch scoring.

naswot, grad_norm, snip, fisher, grasp and jacob_cov all run the same network in training mode on the same
batch. Scored one by one they cost six forward passes and seven backward passes; here one forward pass
(hooks collect NASWOT's codes and Fisher's activations) feeds one cross-entropy backward (grad_norm, snip,
Fisher and GraSP's ``g``, kept differentiable when GraSP is asked for), one backward of the summed logits
to the input (jacob_cov) and GraSP's ``H g``: one forward and backward pass more with the activation
pattern of the shared forward pass frozen, or one double backward (``hvp``, see :mod:`.grasp`). Each score
equals its standalone proxy's (the tests check it); only the time per proxy is no longer separable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgenas.estimators.proxies.activation_pattern import FrozenActivationPattern
from edgenas.estimators.proxies.base import (
    Batch,
    ModelLike,
    channels_last,
    check_batch_size,
    cross_entropy,
    fresh_model,
    run_forward,
    seeded,
    train_mode,
    weight_layers,
)
from edgenas.estimators.proxies.grasp import _hvp_finite_difference, grasp_score, hvp_frozen_difference, resolve_hvp
from edgenas.estimators.proxies.jacob_cov import correlation_score
from edgenas.estimators.proxies.naswot import CodeKernel

SHARED: tuple[str, ...] = ("naswot", "grad_norm", "snip", "fisher", "grasp", "jacob_cov")
_NEED_LOSS_GRAD = ("grad_norm", "snip", "fisher", "grasp")


class _FisherCollector:
    """Fisher's per-channel terms from the outputs of the conv/linear layers (see :mod:`.fisher`)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.terms: list[torch.Tensor] = []
        self._tensor_hooks: list[Any] = []
        self._module_hooks = [layer.register_forward_hook(self._on_output) for layer in layers]

    def _on_output(self, module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if not out.requires_grad:
            return
        act = out.detach()

        def on_grad(grad: torch.Tensor) -> None:
            prod = act * grad.detach()
            per_channel = prod.sum(tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
            self.terms.append(0.5 * per_channel.double().pow(2).mean(0).sum())

        self._tensor_hooks.append(out.register_hook(on_grad))

    def stop_forward(self) -> None:
        for h in self._module_hooks:
            h.remove()

    def stop_backward(self) -> None:
        for h in self._tensor_hooks:
            h.remove()

    def score(self) -> float:
        return float(sum(self.terms)) if self.terms else 0.0


def shared_scores(model: ModelLike, batch: Batch, seed: int = 0,
                  names: Sequence[str] = SHARED, hvp: str = "exact") -> dict[str, float]:
    """The scores of ``names`` (a subset of :data:`SHARED`) from one shared pass; ``hvp`` is GraSP's
    Hessian-vector product method (:func:`~edgenas.estimators.proxies.grasp.grasp`)."""
    from edgenas.estimators.proxies import get_proxy

    wanted = [n for n in SHARED if n in names]
    x, y = batch
    for name in wanted:
        check_batch_size(get_proxy(name), len(x))
    out_scores: dict[str, float] = {}
    if not wanted:
        return out_scores
    with seeded(seed):
        net = train_mode(fresh_model(model))
        frozen = "grasp" in wanted and resolve_hvp(net, hvp) == "frozen"
        if frozen:  # as standalone frozen GraSP: channels-last speeds the passes up (it slows a double backward)
            net = channels_last(net)
        layers = weight_layers(net)
        weights = [layer.weight for layer in layers]
        codes = CodeKernel(net, len(x)) if "naswot" in wanted else None
        fisher = _FisherCollector(layers) if "fisher" in wanted else None
        need_jac, need_grasp = "jacob_cov" in wanted, "grasp" in wanted
        pattern = FrozenActivationPattern(net) if frozen else None

        def compute() -> float:
            inp = x.detach().clone().requires_grad_(need_jac)
            try:
                out = net(inp)
                out = out[-1] if isinstance(out, tuple | list) else out
            finally:
                if codes is not None:
                    codes.remove()
                if fisher is not None:
                    fisher.stop_forward()
            if codes is not None:
                out_scores["naswot"] = codes.score()
            g: list[torch.Tensor] = []
            g_graph: list[torch.Tensor | None] = []
            if any(n in wanted for n in _NEED_LOSS_GRAD):
                loss = cross_entropy(out, y)
                try:
                    grads = torch.autograd.grad(loss, weights, create_graph=need_grasp and not frozen,
                                                retain_graph=True, allow_unused=True)
                finally:
                    if fisher is not None:
                        fisher.stop_backward()
                g_graph = list(grads)
                g = [torch.zeros_like(w) if gi is None else gi.detach()
                     for w, gi in zip(weights, grads, strict=True)]
                _gradient_scores(wanted, weights, g, out_scores)
                if fisher is not None:
                    out_scores["fisher"] = fisher.score()
            if need_jac:
                (jx,) = torch.autograd.grad(out.sum(), inp, retain_graph=need_grasp and not frozen,
                                            allow_unused=True)
                out_scores["jacob_cov"] = (
                    float("nan") if jx is None else correlation_score(jx.reshape(len(inp), -1).numpy())
                )
            if pattern is not None:
                del out
                out_scores["grasp"] = grasp_score(weights, hvp_frozen_difference(net, weights, g, pattern, x, y))
            elif need_grasp:
                out_scores["grasp"] = _grasp_from(net, weights, g, g_graph, x, y)
            return 0.0

        try:
            run_forward(compute, "+".join(wanted))
        finally:
            if pattern is not None:
                pattern.remove()
    return out_scores


def _gradient_scores(wanted: Sequence[str], weights: Sequence[torch.Tensor], g: Sequence[torch.Tensor],
                     out_scores: dict[str, float]) -> None:
    if "grad_norm" in wanted:
        out_scores["grad_norm"] = float(sum(gi.double().norm() for gi in g))
    if "snip" in wanted:
        out_scores["snip"] = float(
            sum((gi * w.detach()).abs().sum(dtype=torch.float64) for gi, w in zip(g, weights, strict=True))
        )


def _grasp_from(net: nn.Module, weights: Sequence[torch.Tensor], g: Sequence[torch.Tensor],
                g_graph: Sequence[torch.Tensor | None], x: torch.Tensor, y: torch.Tensor) -> float:
    z = sum((gi * gg).sum() for gi, gg in zip(g, g_graph, strict=True) if gg is not None and gg.requires_grad)
    if isinstance(z, torch.Tensor):
        try:
            hg = torch.autograd.grad(z, list(weights), allow_unused=True)
            hg = [torch.zeros_like(w) if h is None else h for w, h in zip(weights, hg, strict=True)]
        except RuntimeError as exc:
            if "not implemented" not in str(exc):
                raise
            hg = _hvp_finite_difference(net, list(weights), list(g), x, y)
    else:
        hg = [torch.zeros_like(w) for w in weights]
    return grasp_score(list(weights), list(hg))
