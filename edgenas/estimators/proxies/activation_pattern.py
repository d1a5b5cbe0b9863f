"""A network's activation pattern, frozen: the network made smooth around one point of its weights.

A ReLU network is piecewise smooth in its weights: between kinks (a pre-activation crossing zero) it is a
smooth function, and the Hessian that double backward computes (ReLU's second derivative taken as zero) is
the Hessian of that smooth piece. A finite difference of gradients crosses kinks and picks up their jumps
(on NB201 cells in float32: 15 % to 10x off the exact product). With every activation module held on the
piece it was on at the base point, the finite difference becomes a difference of the smooth piece itself
and converges to the double-backward product, at the cost of one extra forward and backward pass instead of
a double backward (about four times cheaper on CIFAR-sized batches on a CPU). GraSP uses it
(:mod:`edgenas.estimators.proxies.grasp`).

A network qualifies when every kink lives in a module that can be frozen (:data:`PIECEWISE`, not in place)
and every other module is linear or smooth: a module of a known torch.nn type with its own ``forward``
(:data:`SMOOTH_OR_LINEAR`), a container whose ``forward`` is inherited from one (``nn.Sequential``), or a
class that declares ``PIECEWISE_ONLY_IN_SUBMODULES = True`` itself (its ``forward`` calls no piecewise
function of its own, e.g. no ``F.relu``; edgenas's NB201 and MobileNetV3 modules do; a subclass does not
inherit the declaration). Anything else (a functional
activation, max pooling) keeps GraSP on the exact double backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MARKER = "PIECEWISE_ONLY_IN_SUBMODULES"

PIECEWISE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardsigmoid, nn.Hardswish)

SMOOTH_OR_LINEAR: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Identity, nn.Flatten,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Module,
)
_STRUCTURAL_FORWARDS = {cls.forward for cls in SMOOTH_OR_LINEAR}


def _piece(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Which piece of ``module``'s function each element of ``x`` is on (0 = the flat low piece)."""
    if isinstance(module, nn.ReLU):
        return (x > 0).to(torch.int8)
    lo, hi = (0.0, 6.0) if isinstance(module, nn.ReLU6) else (-3.0, 3.0)
    return (x > lo).to(torch.int8) + (x >= hi).to(torch.int8)


def _on_piece(module: nn.Module, x: torch.Tensor, piece: torch.Tensor) -> torch.Tensor:
    """``module``'s function on the recorded pieces: smooth in ``x``, equal to ``module(x)`` at the base."""
    mid, top = (piece == 1).to(x.dtype), (piece == 2).to(x.dtype)
    if isinstance(module, nn.ReLU):
        return x * mid
    if isinstance(module, nn.ReLU6):
        return x * mid + 6.0 * top
    if isinstance(module, nn.Hardsigmoid):
        return (x / 6.0 + 0.5) * mid + top
    return x * (x + 3.0) / 6.0 * mid + x * top  # Hardswish


def can_freeze(net: nn.Module) -> bool:
    """Whether every kink of ``net`` sits in a freezable module (see the module docstring)."""
    for m in net.modules():
        if isinstance(m, PIECEWISE):
            if type(m) not in PIECEWISE or getattr(m, "inplace", False):
                return False
        elif not (type(m).forward in _STRUCTURAL_FORWARDS or vars(type(m)).get(MARKER, False)):
            return False
    return True


class FrozenActivationPattern:
    """Records the piece of every activation on the next forward pass; after :meth:`freeze`, forward passes
    evaluate each activation on its recorded piece. Use as a context manager (hooks removed on exit)."""

    def __init__(self, net: nn.Module) -> None:
        self._pieces: dict[nn.Module, list[torch.Tensor]] = {}
        self._calls: dict[nn.Module, int] = {}
        self._frozen = False
        self._hooks: list[Any] = [net.register_forward_pre_hook(self._new_pass)]
        for m in net.modules():
            if isinstance(m, PIECEWISE):
                self._hooks.append(m.register_forward_hook(self._on_activation))

    def _new_pass(self, net: nn.Module, inputs: Any) -> None:
        self._calls.clear()
        if not self._frozen:
            self._pieces.clear()

    def _on_activation(self, module: nn.Module, inputs: tuple[torch.Tensor, ...],
                       out: torch.Tensor) -> torch.Tensor | None:
        x = inputs[0]
        if not self._frozen:  # a module called several times in a pass has one pattern per call
            self._pieces.setdefault(module, []).append(_piece(module, x.detach()))
            return None
        call = self._calls.get(module, 0)
        self._calls[module] = call + 1
        return _on_piece(module, x, self._pieces[module][call])

    def freeze(self) -> None:
        """From now on, hold every activation on the piece recorded by the last forward pass."""
        self._frozen = True

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._pieces.clear()
        self._calls.clear()

    def __enter__(self) -> FrozenActivationPattern:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
