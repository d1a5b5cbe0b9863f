"""Net2Net weight inheritance: function-preserving wider / larger-kernel / deeper MBConv networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.data import load_dataset
from edgenas.errors import EdgenasError
from edgenas.estimators.net2net import Net2NetEstimator, dominates, inherit, widen_block
from edgenas.estimators.train import TrainRecipe
from edgenas.experiment import run_search
from edgenas.models.blocks import MBConv
from edgenas.spaces import get_space

from .test_experiment import MICRO
from .test_experiment import config as micro_config


def _scramble(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial batch-norm parameters and statistics (a fresh net's are ones and zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _outputs(model: nn.Module, x: torch.Tensor, train: bool) -> torch.Tensor:
    model.train(train)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("space_name", ["mbv3-tiny", MICRO])
def test_the_largest_child_of_the_smallest_parent_computes_the_same_function(space_name):
    space = get_space(space_name)
    parent_arch = space.validate(space.extreme(smallest=True))
    child_arch = space.validate({**space.extreme(smallest=False), "resolution": parent_arch["resolution"],
                                 "width": parent_arch["width"]})
    parent = _scramble(space.build(parent_arch, 10, 3, seed=1), seed=0)
    child = inherit(space, parent_arch, parent, child_arch, 10, 3, seed=2)
    assert sum(p.numel() for p in child.parameters()) > sum(p.numel() for p in parent.parameters())
    x = torch.randn(6, 3, parent_arch["resolution"], parent_arch["resolution"])
    for train in (False, True):  # batch statistics too: copied channels have copied statistics
        ref = _outputs(parent, x, train)
        assert torch.allclose(_outputs(child, x, train), ref, atol=1e-4 * float(ref.abs().max()))


def test_random_dominating_pairs_keep_the_function():
    space = get_space("mbv3-tiny")
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(40):
        a, b = space.sample(rng), space.sample(rng)
        merged = dict(a)  # the element-wise larger of the two, at a's resolution and width
        for key in a:
            if key.endswith((".kernel", ".expand", ".depth")):
                merged[key] = max(a[key], b[key])
        if not dominates(space, merged, a) or space.key(merged) == space.key(a):
            continue
        parent = _scramble(space.build(a, 10, 3, seed=4), seed=checked)
        child = inherit(space, a, parent, merged, 10, 3, seed=5)
        x = torch.randn(3, 3, a["resolution"], a["resolution"])
        ref = _outputs(parent, x, False)
        assert torch.allclose(_outputs(child, x, False), ref, atol=1e-5 * float(ref.abs().max()))
        checked += 1
    assert checked >= 10


def test_widening_splits_each_copied_channels_outgoing_weights():
    torch.manual_seed(0)
    parent, child = MBConv(8, 8, 3, 2, 1, use_se=True, divisor=4), MBConv(8, 8, 5, 3, 1, use_se=True, divisor=4)
    widen_block(child, parent, np.random.default_rng(0))
    w_child, w_parent = child.project[0].weight[:, :, 0, 0], parent.project[0].weight[:, :, 0, 0]
    # each new hidden channel is a copy: summing the project weights over copies gives the parent's back
    exp_child, exp_parent = child.expand[0].weight[:, :, 0, 0], parent.expand[0].weight[:, :, 0, 0]
    origin = [int(torch.nonzero((exp_parent == row).all(1))[0]) for row in exp_child]
    summed = torch.zeros_like(w_parent)
    for i, o in enumerate(origin):
        summed[:, o] += w_child[:, i]
    assert origin[: parent.hidden] == list(range(parent.hidden))
    assert torch.allclose(summed, w_parent, atol=1e-6)
    # the 3x3 filter sits in the centre of the 5x5 one, zeros around it
    dw = child.depthwise[0].weight[: parent.hidden]
    assert torch.equal(dw[:, :, 1:4, 1:4], parent.depthwise[0].weight)
    assert float(dw.detach().abs().sum()) == pytest.approx(float(parent.depthwise[0].weight.detach().abs().sum()),
                                                           rel=1e-6)


def test_dominates_and_bad_input():
    space = get_space("mbv3-tiny")
    small, large = space.validate(space.extreme(smallest=True)), space.validate(space.extreme(smallest=False))
    assert not dominates(space, small, {**small, "s1.depth": 3})  # shallower
    other_res = next(r for d in space.dimensions if d.name == "resolution" for r in d.choices
                     if r != small["resolution"])
    assert not dominates(space, {**large, "resolution": other_res}, small)
    assert dominates(space, {**large, "resolution": small["resolution"], "width": small["width"]}, small)
    parent = space.build(small, 10, 3, seed=0)
    with pytest.raises(EdgenasError, match="at least as deep"):
        inherit(space, {**small, "s1.depth": 3}, parent, small, 10)
    with pytest.raises(EdgenasError, match="MobileNetV3 spaces"):
        dominates(get_space("nb201"), {}, {})


def test_the_estimator_inherits_from_the_largest_dominated_architecture_it_trained():
    space = get_space(MICRO)
    data = load_dataset("synthetic", 12)
    est = Net2NetEstimator(space, data, TrainRecipe(epochs=1), seed=0)
    root = space.validate(space.extreme(smallest=True))
    mid = space.validate({**root, "s2.depth": 2})
    big = space.validate({**mid, "s2.b1.kernel": 5, "s2.b2.expand": 3})
    side = space.validate({**root, "s1.b1.kernel": 5})
    for arch in (mid, big, side):
        assert 0.0 <= est(arch) <= 100.0
    key = space.key
    assert est.parents == {key(root): None, key(mid): key(root), key(big): key(mid), key(side): key(root)}
    assert est(root) == est(root)  # the root is only evaluated again, not retrained
    assert len(est.pool) == 4
    small_pool = Net2NetEstimator(space, data, TrainRecipe(epochs=1), seed=0, max_pool=2)
    for arch in (mid, big, side):
        small_pool(arch)
    assert len(small_pool.pool) == 2 and key(root) in small_pool.pool and key(side) in small_pool.pool


def test_a_search_with_the_net2net_estimator(tmp_path):
    result = run_search(micro_config(tmp_path, estimator="net2net", strategy="random", budget=4))
    assert len(result.records) == 4
    assert all(0.0 <= r.metrics["accuracy"] <= 100.0 for r in result.records)
    assert len(list((tmp_path / "weights").iterdir())) == 4
