"""Zero-shot proxies on tiny networks: determinism, invariances, hand-computed cases, NaN and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies import PROXIES, get_proxy, mean_rank_vote, parse_members, ranks, score
from edgenas.estimators.proxies.ensemble import percentile_vote
from edgenas.estimators.proxies.grasp import _gradients, _hvp_exact, _hvp_finite_difference
from edgenas.estimators.proxies.jacob_cov import correlation_score
from edgenas.estimators.proxies.shared import SHARED, shared_scores

torch.set_num_threads(1)


class TinyNet(nn.Module):
    """conv-BN-ReLU x depth, global pooling, linear; ``features`` is the pre-pooling map."""

    def __init__(self, depth: int = 2, width: int = 8, bn: bool = True, bias: bool = False, classes: int = 4,
                 in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers.append(nn.Conv2d(c, width, 3, padding=1, bias=bias))
            if bn:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes, bias=bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class NaNNet(TinyNet):
    """A network whose output is NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def make(seed: int = 0, **kw: object) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kw)  # type: ignore[arg-type]


def batch(n: int = 8, classes: int = 4, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


# ------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name", list(PROXIES))
def test_every_proxy_is_deterministic_and_leaves_the_model_alone(name: str) -> None:
    net, b = make(), batch()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = score(name, net, b, seed=3)
    second = score(name, net, b, seed=3)
    assert first == second
    assert math.isfinite(first)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} changed {k}"


def test_a_builder_scores_like_the_module() -> None:
    b = batch()
    for name in ("synflow", "naswot", "snip"):
        assert score(name, lambda: make(1), b) == score(name, make(1), b)


def test_zen_depends_on_its_seed_only_through_its_random_draws() -> None:
    net, b = make(), batch()
    assert score("zen", net, b, seed=0) != score("zen", net, b, seed=1)
    # Zen re-initialises every weight, so the network's own init does not matter
    assert score("zen", make(0), b, seed=5) == pytest.approx(score("zen", make(9), b, seed=5), rel=1e-12)


# -------------------------------------------------------------------------------- invariance/sensitivity
def test_naswot_is_invariant_to_a_positive_weight_scale() -> None:
    b = batch(16)
    plain = make(bn=False, bias=False)
    scaled = make(bn=False, bias=False)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(3.0)
    assert score("naswot", plain, b) == score("naswot", scaled, b)
    with_bn, with_bn_scaled = make(2), make(2)
    with torch.no_grad():
        for m in with_bn_scaled.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(4.0)
    assert score("naswot", with_bn, b) == pytest.approx(score("naswot", with_bn_scaled, b), abs=1e-9)


class _ReusedBatchNorm(nn.Module):
    """One BN layer applied after two different convs (a shared normalisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.b(torch.relu(self.bn(self.a(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def test_zen_reads_each_call_of_a_reused_batch_norm() -> None:
    tracked = _ReusedBatchNorm()
    direct = _ReusedBatchNorm()  # no running statistics: Zen computes each call's variance from its input
    direct.load_state_dict(tracked.state_dict())
    direct.bn.track_running_stats = False
    direct.bn.running_mean = direct.bn.running_var = direct.bn.num_batches_tracked = None
    b = batch(8)
    assert score("zen", tracked, b, seed=3) == pytest.approx(score("zen", direct, b, seed=3), rel=1e-6)


def test_naswot_changes_when_the_codes_change() -> None:
    b = batch(16)
    assert score("naswot", make(0), b) != score("naswot", make(1), b)


def test_zen_grows_with_depth_of_a_plain_conv_stack() -> None:
    b = batch(8)
    zen = [score("zen", make(depth=d), b, seed=0) for d in (1, 2, 4, 8)]
    assert zen == sorted(zen) and len(set(zen)) == 4, zen


def test_params_is_exact_and_flops_counts_macs() -> None:
    net = TinyNet(depth=1, width=4, classes=2)  # conv 3*4*9 + BN 2*4 + linear 4*2 (no bias)
    assert score("params", net, batch()) == 3 * 4 * 9 + 2 * 4 + 4 * 2
    # conv: 8x8 positions x 4 out x 27 in; linear: 4 x 2
    assert score("flops", net, batch(size=8)) == 8 * 8 * 4 * 27 + 4 * 2


def test_synflow_is_data_free_and_grows_with_width() -> None:
    a, b = batch(seed=0), batch(seed=1)
    assert score("synflow", make(), a) == score("synflow", make(), b)
    assert score("synflow", make(width=16), a) > score("synflow", make(width=4), a)


# ---------------------------------------------------------------------------------------- hand-computed
def test_gradsign_equals_the_formula_on_two_samples() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False))
    x = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 0.3, 2.0]]).reshape(2, 3, 1, 1)
    y = torch.tensor([0, 1])
    w = net[1].weight.detach()
    signs = torch.zeros_like(w)
    for i in range(2):
        xi = x[i].reshape(3)
        p = torch.softmax(w @ xi, 0)
        g = torch.outer(p - F.one_hot(y[i], 2).float(), xi)  # dCE/dW for one sample
        signs += g.sign()
    expected = float(signs.abs().sum())
    assert score("gradsign", net, (x, y)) == expected
    assert expected not in (0.0, 12.0)  # the case mixes agreeing and disagreeing signs


class _TwiceUsedConv(nn.Module):
    """A strided and a grouped conv, BN, and one conv applied twice (its per-sample gradients add up)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=4, bias=False)
        self.again = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.a(x)))
        h = self.again(torch.relu(self.again(self.dw(h))))
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("bn", ["per-sample", "frozen"])
def test_gradsign_batched_per_sample_gradients_equal_vmap(bn: str) -> None:
    from torch.func import replace_all_batch_norm_modules_

    from edgenas.estimators.proxies.gradsign import (
        _freeze_batch_statistics,
        _use_instance_statistics,
        per_sample_gradient_signs,
        per_sample_gradient_signs_by_hooks,
    )

    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    reference, batched = _TwiceUsedConv().train(), _TwiceUsedConv().train()
    batched.load_state_dict(reference.state_dict())
    if bn == "frozen":
        _freeze_batch_statistics(reference, x)
        _freeze_batch_statistics(batched, x)
    else:
        replace_all_batch_norm_modules_(reference)
        _use_instance_statistics(batched.bn)
    want = per_sample_gradient_signs(reference, x, y)
    got = per_sample_gradient_signs_by_hooks(batched, x, y)
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert any(bool((s.abs() < len(x)).any()) for s in want.values())  # samples disagree somewhere


def test_gradsign_falls_back_to_batch_statistics_on_1x1_maps() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4, 2))
    x, y = torch.randn(6, 3, 1, 1), torch.tensor([0, 1, 0, 1, 1, 0])
    value = score("gradsign", net, (x, y))
    assert math.isfinite(value) and value > 0


def test_grasp_finite_difference_matches_the_exact_hessian_vector_product() -> None:
    net, (x, y) = make(), batch()
    net.train()
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    g = [gi.detach() for gi in _gradients(net, weights, x, y)]
    exact = _hvp_exact(net, weights, g, x, y)
    approx = _hvp_finite_difference(net, weights, g, x, y)
    for e, a in zip(exact, approx, strict=True):
        assert torch.allclose(e.double(), a, rtol=1e-3, atol=1e-6)


def test_jacob_cov_is_highest_for_uncorrelated_rows() -> None:
    rng = np.random.default_rng(0)
    independent = rng.normal(size=(6, 200))
    correlated = independent[:1] + 0.1 * rng.normal(size=(6, 200))
    assert correlation_score(independent) > correlation_score(correlated)
    assert math.isnan(correlation_score(np.ones((3, 5))))


def test_shared_pass_equals_the_standalone_proxies() -> None:
    net, b = make(), batch()
    shared = shared_scores(net, b, seed=2)
    assert set(shared) == set(SHARED)
    for name in SHARED:
        assert shared[name] == pytest.approx(score(name, net, b, seed=2), rel=1e-6), name


def test_shared_pass_with_hardswish_uses_the_finite_difference_grasp() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Hardswish(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    b = batch()
    assert shared_scores(net, b, names=["grasp"])["grasp"] == pytest.approx(score("grasp", net, b), rel=1e-9)


# -------------------------------------------------------------------------------------------- NaN/inf
def test_nan_scores_are_returned_not_raised_and_rank_last() -> None:
    b = batch()
    for name in ("grad_norm", "snip", "jacob_cov", "synflow"):
        assert math.isnan(score(name, NaNNet(), b)), name
    r = ranks([1.0, float("nan"), 3.0, float("inf"), 2.0])
    assert list(r) == [3.0, 1.5, 5.0, 1.5, 4.0]
    vote = mean_rank_vote({"a": [1.0, 2.0, float("nan")], "b": [3.0, 1.0, 2.0]})
    assert list(vote) == [2.5, 2.0, 1.5]  # a's NaN ranks last


def test_a_disconnected_network_scores_minus_infinity_under_zen() -> None:
    class Dead(TinyNet):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return super().features(x) * 0.0

    assert score("zen", Dead(), batch()) == -math.inf


def test_percentile_vote_against_a_reference() -> None:
    ref = {"a": [1.0, 2.0, 3.0, float("nan")], "b": [10.0, 20.0, 30.0, 40.0]}
    assert percentile_vote({"a": 2.0, "b": 25.0}, ref) == pytest.approx(((1 + 1 + 0.5) / 4 + 2 / 4) / 2)
    assert percentile_vote({"a": float("nan"), "b": 5.0}, ref) == 0.0


# ------------------------------------------------------------------------------------------- bad input
def test_zen_needs_batch_norm() -> None:
    with pytest.raises(EdgenasError, match="batch-norm"):
        score("zen", make(bn=False), batch())


def test_a_batch_smaller_than_the_proxy_needs() -> None:
    for name in ("naswot", "jacob_cov", "gradsign"):
        with pytest.raises(EdgenasError, match="at least 2"):
            score(name, make(), batch(1))
    with pytest.raises(EdgenasError, match="'jacob_cov' needs a batch of at least 2"):
        shared_scores(make(), batch(1), names=("grad_norm", "jacob_cov"))
    assert set(shared_scores(make(), batch(1), names=("grad_norm", "snip"))) == {"grad_norm", "snip"}


def test_unknown_proxy_lists_the_valid_names() -> None:
    with pytest.raises(EdgenasError, match="valid: .*naswot.*did you mean 'synflow'"):
        get_proxy("synflw")
    with pytest.raises(EdgenasError, match="unknown proxy 'nope'"):
        parse_members("synflow+nope")


def test_labels_are_checked() -> None:
    x, _ = batch()
    with pytest.raises(EdgenasError, match="needs labels"):
        score("snip", make(), (x, None))
    with pytest.raises(EdgenasError, match=r"labels must lie in \[0, 4\)"):
        score("grad_norm", make(), (x, torch.full((len(x),), 7)))


def test_naswot_needs_relu_family_activations() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    with pytest.raises(EdgenasError, match="ReLU-family"):
        score("naswot", net, batch())


@pytest.mark.parametrize(("kernel", "padding", "dilation", "size"),
                         [(3, 1, 1, (9, 7)), (1, 0, 1, (6, 6)), (5, 2, 1, (8, 8)), (3, 2, 2, (7, 9)),
                          (3, 0, 1, (6, 8))])
def test_per_sample_conv_gradients_by_shifts_equal_unfolding(kernel: int, padding: int, dilation: int,
                                                             size: tuple[int, int]) -> None:
    from edgenas.estimators.proxies.gradsign import per_sample_conv_gradients_by_shifts

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel, padding=padding, dilation=dilation, bias=False)
    a = torch.randn(5, 3, *size, requires_grad=True)
    out = conv(a)
    g = torch.randn_like(out)
    want = []
    for i in range(len(a)):  # each sample's own weight gradient, by autograd
        (w_grad,) = torch.autograd.grad(conv(a[i:i + 1]), conv.weight, g[i:i + 1])
        want.append(w_grad)
    got = per_sample_conv_gradients_by_shifts(conv, a.detach(), g)
    assert got.shape == (5, *conv.weight.shape)
    assert torch.allclose(got, torch.stack(want), atol=1e-5, rtol=1e-4)
