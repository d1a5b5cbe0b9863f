"""Frozen activation patterns and GraSP's forward-difference Hessian-vector product."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies import score
from edgenas.estimators.proxies.activation_pattern import FrozenActivationPattern, can_freeze
from edgenas.estimators.proxies.grasp import (
    _gradients,
    _hvp_exact,
    _hvp_finite_difference,
    hvp_frozen_difference,
    resolve_hvp,
)
from edgenas.estimators.proxies.shared import shared_scores
from edgenas.spaces import get_space

torch.set_num_threads(1)

ACTIVATIONS = [nn.ReLU(), nn.ReLU6(), nn.Hardsigmoid(), nn.Hardswish()]


def plain_net(act: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), act or nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: type(a).__name__)
def test_a_frozen_activation_equals_the_module_at_the_recorded_input_and_keeps_its_pieces(act: nn.Module) -> None:
    net = nn.Sequential(act)
    x = torch.linspace(-8, 8, 161).reshape(1, 1, 7, 23)
    with FrozenActivationPattern(net) as pattern:
        base = net(x)
        pattern.freeze()
        assert torch.allclose(net(x), base, atol=1e-6)
        shifted = net(x + 0.3)  # some elements cross a kink; they stay on their recorded piece
    slope_base = torch.autograd.functional.jacobian(lambda t: act(t), x).reshape(x.numel(), -1).diagonal()
    frozen_slope = (shifted - base).flatten() / 0.3
    linear_pieces = isinstance(act, nn.ReLU | nn.ReLU6 | nn.Hardsigmoid)
    if linear_pieces:  # on a linear piece the difference quotient is the recorded piece's slope
        assert torch.allclose(frozen_slope, slope_base, atol=1e-4)
    else:  # hard-swish: elements recorded on the quadratic piece stay on it past the kink at 3
        near = ((x > 2.75) & (x < 2.95)).flatten()
        xs = x.flatten()[near] + 0.3
        assert torch.allclose(shifted.flatten()[near], xs * (xs + 3) / 6, atol=1e-5)
        assert not torch.allclose(act(xs), xs * (xs + 3) / 6)
    crossed = (act(x + 0.3) - base).flatten() / 0.3 - slope_base
    assert crossed.abs().max() > 0.1  # without freezing, some elements do change piece


def test_recording_is_per_forward_pass_and_per_call() -> None:
    relu = nn.ReLU()

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = relu

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.relu(x) - 1.0)

    net = Twice()
    x = torch.tensor([[-1.0, 0.5, 2.0]])
    with FrozenActivationPattern(net) as pattern:
        net(x * 100)  # an earlier pass's pattern is replaced by the next one
        base = net(x)
        pattern.freeze()
        assert torch.equal(net(x), base)
        moved = net(x + 10.0)
    # first call: [0, 1, 1] -> (x+10)*[0,1,1] - 1 = [-1, 9.5, 11]; second call: pattern of [-1, -0.5, 1] = [0, 0, 1]
    assert torch.allclose(moved, torch.tensor([[0.0, 0.0, 11.0]]))


def test_can_freeze_accepts_module_activations_and_refuses_hidden_kinks() -> None:
    assert can_freeze(plain_net())
    for act in ACTIVATIONS:
        assert can_freeze(plain_net(act))
    assert not can_freeze(plain_net(nn.ReLU(inplace=True)))
    assert not can_freeze(plain_net(nn.MaxPool2d(1)))
    assert not can_freeze(plain_net(nn.LeakyReLU()))

    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(x)

    assert not can_freeze(nn.Sequential(nn.Conv2d(3, 3, 1), Functional()))

    class Declared(Functional):
        PIECEWISE_ONLY_IN_SUBMODULES = True

    class Inherits(Declared):
        pass

    assert can_freeze(nn.Sequential(Declared()))
    assert not can_freeze(nn.Sequential(Inherits()))  # the declaration is not inherited


@pytest.mark.parametrize("space_name, arch_index", [("nb201", 0), ("mbv3-tiny", 0)])
def test_edgenas_networks_can_be_frozen(space_name: str, arch_index: int) -> None:
    space = get_space(space_name)
    arch = space.sample(np.random.default_rng(arch_index))
    assert can_freeze(space.build(arch, 10, 3, 0))


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Hardswish()], ids=lambda a: type(a).__name__)
def test_frozen_forward_difference_matches_the_exact_hessian_vector_product(act: nn.Module) -> None:
    net, (x, y) = plain_net(act).double().train(), batch()
    x = x.double()
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with FrozenActivationPattern(net) as pattern:
        g = [gi.detach() for gi in _gradients(net, weights, x, y)]
        approx = hvp_frozen_difference(net, weights, g, pattern, x, y, step=1e-7)
    if isinstance(act, nn.Hardswish):  # no double backward in PyTorch: the double-precision central difference
        exact = _hvp_finite_difference(net, weights, g, x, y)
        tol = 1e-3
    else:
        exact = _hvp_exact(net, weights, g, x, y)
        tol = 1e-5
    for e, a in zip(exact, approx, strict=True):
        assert torch.allclose(a, e, rtol=tol, atol=tol * float(e.abs().max())), (a - e).abs().max()


def test_grasp_frozen_and_exact_agree_and_the_weights_come_back() -> None:
    net, (x, y) = plain_net().double(), batch()
    b = (x.double(), y)  # double precision: the forward difference's float32 rounding (~1 %) out of the way
    before = {k: v.clone() for k, v in net.state_dict().items()}
    exact = score("grasp", net, b, hvp="exact")
    frozen = score("grasp", net, b, hvp="frozen")
    assert frozen == pytest.approx(exact, rel=1e-3)
    assert score("grasp", net, b) == exact  # exact is the default
    assert shared_scores(net, b, names=["grasp"], hvp="frozen")["grasp"] == pytest.approx(frozen, rel=1e-6)
    assert shared_scores(net, b, names=["grasp"])["grasp"] == pytest.approx(exact, rel=1e-6)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_hvp_method_errors_are_one_line() -> None:
    with pytest.raises(EdgenasError, match="unknown Hessian-vector product method 'fast'"):
        resolve_hvp(plain_net(), "fast")
    with pytest.raises(EdgenasError, match="use hvp='exact'"):
        resolve_hvp(plain_net(nn.MaxPool2d(1)), "frozen")
    assert resolve_hvp(plain_net(nn.MaxPool2d(1)), "exact") == "exact"
    assert resolve_hvp(plain_net(), "frozen") == "frozen"
