from __future__ import annotations

import numpy as np
import pytest
import torch

from edgenas.hardware.flops import count_macs, count_params
from edgenas.spaces import get_space


def _params(space, arch):
    return count_params(space.build(arch, 10, 3))


def test_params_grow_with_depth_width_kernel_expand():
    space = get_space("mbv3-tiny")
    base = space.extreme(smallest=True)
    p0 = _params(space, base)
    assert _params(space, {**base, "s3.depth": 3, "s3.b3.kernel": 3, "s3.b3.expand": 3}) > p0
    assert _params(space, {**base, "width": 1.0}) > p0
    assert _params(space, {**base, "s2.b1.kernel": 5}) > p0
    assert _params(space, {**base, "s2.b1.expand": 6}) > p0
    # resolution changes compute, not parameters
    assert _params(space, {**base, "resolution": 32}) == p0
    assert count_macs(space.build({**base, "resolution": 32}, 10, 3), 32) > count_macs(
        space.build(base, 10, 3), 16
    )


def test_every_sampled_arch_builds_and_runs(rng):
    space = get_space("mbv3-tiny")
    for _ in range(8):
        arch = space.sample(rng)
        model = space.build(arch, num_classes=7, in_channels=1).eval()
        r = space.resolution(arch)
        with torch.no_grad():
            assert model(torch.randn(2, 1, r, r)).shape == (2, 7)


def test_full_size_ofa_net_matches_published_scale():
    space = get_space("mbv3")
    largest = space.from_ofa({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224, "w": 1.0})
    # OFA's largest MobileNetV3 subnet (w1.0) has about 7.7M parameters
    assert 7.0e6 < count_params(space.build(largest, 1000, 3)) < 8.5e6


def test_init_is_deterministic_in_seed(rng):
    space = get_space("mbv3-tiny")
    arch = space.sample(rng)
    a, b, c = (space.build(arch, 10, 3, seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_residual_only_when_shapes_match():
    space = get_space("mbv3-tiny")
    model = space.build(space.extreme(), 10, 3)
    from edgenas.models.blocks import MBConv

    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    assert any(b.residual for b in blocks) and any(not b.residual for b in blocks)
    assert all(b.residual == (b.stride == 1 and b.cin == b.cout) for b in blocks)


@pytest.mark.parametrize("space_name", ["mbv3-tiny", "mbv3", "nb201"])
def test_count_macs_equals_pytorchs_flop_counter_mode(space_name):
    from torch.utils.flop_counter import FlopCounterMode

    space = get_space(space_name)
    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = space.sample(rng)
        resolution = space.resolution(arch)
        model = space.build(arch, 10, 3, seed=0).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as reference:
            model(torch.zeros(1, 3, resolution, resolution))
        fresh = space.build(arch, 10, 3, seed=0)  # nothing cached from a first forward pass
        first = count_macs(fresh, resolution)
        assert first == reference.get_total_flops() // 2 > 0
        assert count_macs(fresh, resolution) == first  # no one-off set-up work counted on the first pass


def test_zero_last_gamma_makes_every_residual_block_the_identity():
    from edgenas.models.blocks import MBConv, zero_last_gamma

    space = get_space("mbv3-tiny")
    model = space.build(space.extreme(smallest=False), 10, 3).eval()
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    residual = [b for b in blocks if b.residual]
    assert 0 < len(residual) < len(blocks)
    before = {id(b): b.project[1].weight.detach().clone() for b in blocks}
    assert zero_last_gamma(model) == len(residual)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for b in blocks:
            inp = torch.randn(2, b.cin, 8, 8)
            if b.residual:
                torch.testing.assert_close(b(inp), inp)
            else:  # transition blocks keep their weights and change the shape or values
                assert torch.equal(b.project[1].weight, before[id(b)])
        assert torch.isfinite(model(x)).all()


def test_training_from_scratch_starts_with_zero_gamma_unless_the_recipe_says_no():
    from edgenas.data import load_dataset
    from edgenas.estimators.train import TrainEstimator, TrainRecipe
    from edgenas.models.blocks import MBConv

    space = get_space("mbv3-tiny")
    data = load_dataset("digits").subset(64)
    arch = space.extreme(smallest=False)
    for flag in (True, False):
        est = TrainEstimator(space, data, recipe=TrainRecipe(epochs=0, zero_last_gamma=flag))
        model, _ = est.fit(arch)
        gammas = [m.project[1].weight for m in model.modules() if isinstance(m, MBConv) and m.residual]
        assert gammas and all(bool((g == 0).all()) == flag for g in gammas)
