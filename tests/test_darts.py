"""DARTS: the relaxed mixed op, the NB201 relaxed network, derivation, and a tiny search on each space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgenas.spaces import get_space
from edgenas.spaces.nb201 import OPS
from edgenas.supernets.darts import DartsNB201Net
from edgenas.supernets.gradient_search import GradientSearchConfig, run_search
from edgenas.supernets.mixed import MixedOp
from edgenas.supernets.proxyless import ProxylessSupernet

torch.set_num_threads(1)


def test_darts_mixed_op_is_the_softmax_weighted_sum():
    torch.manual_seed(0)
    ops = [nn.Conv2d(3, 3, 3, padding=1), nn.Identity(), nn.AvgPool2d(3, 1, 1)]
    op = MixedOp(ops, ["conv", "skip", "pool"], mode="darts")
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.5, -1.0, 0.2]))
    op.relax()
    x = torch.randn(2, 3, 5, 5)
    w = torch.softmax(op.alpha.detach(), 0)
    want = sum(w[j] * o(x) for j, o in enumerate(ops))
    assert torch.allclose(op(x), want, atol=1e-6)
    op(x).sum().backward()  # every alpha gets a gradient through the relaxation
    assert (op.alpha.grad.abs() > 0).all()


def test_darts_on_mbv3_computes_every_path():
    net = ProxylessSupernet(get_space("mbv3-tiny"), 10, 3, resolution=16, width=0.75,
                            candidates=[(3, 3), (5, 6), (7, 4)], mode="darts")
    calls = [0]
    for m in net.mixed:
        for c in m.candidates:
            c.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    net.prepare("weight", torch.Generator())
    net(torch.randn(2, 3, 16, 16))
    assert calls[0] == sum(len(m) for m in net.mixed)


def test_nb201_relaxed_network_shares_alpha_and_derives_a_valid_arch():
    space = get_space("nb201")
    net = DartsNB201Net(space, 10, 3, channels=4, cells_per_stage=2)
    assert len(net.arch_parameters()) == 6
    ids = {id(a) for a in net.arch_parameters()}
    for m in net.cells.modules():
        if isinstance(m, MixedOp):
            assert id(m.alpha) in ids
    net.prepare("arch", torch.Generator())
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()
            a[OPS.index("none")] = 5.0  # none is the largest everywhere, yet never derived
            a[OPS.index("nor_conv_3x3")] = 1.0
    arch = net.arch_of(net.argmax_choice())
    assert space.validate(arch) == arch
    assert set(arch.values()) == {"nor_conv_3x3"}


def test_nb201_fixed_choice_matches_the_standalone_ops():
    """With one op fixed per edge the relaxed network computes the discrete cell (none = zeros)."""
    space = get_space("nb201")
    net = DartsNB201Net(space, 10, 3, channels=4, cells_per_stage=1).eval()
    choice = [OPS.index(o) for o in ("skip_connect", "none", "avg_pool_3x3", "skip_connect", "none", "none")]
    net.fix(choice)
    x = torch.randn(1, 3, 8, 8)
    cell = net.cells[0]
    y = net.stem(x)
    n1 = y
    n2 = nn.functional.avg_pool2d(n1, 3, 1, 1, count_include_pad=False)
    want = y + 0 * n1 + 0 * n2  # edge_0_3 skip, edge_1_3 none, edge_2_3 none
    assert torch.allclose(cell(y), want, atol=1e-6)


@pytest.mark.parametrize("space_name", ["nb201", "mbv3-tiny"])
def test_tiny_darts_search_writes_a_valid_arch(tmp_path: Path, space_name: str):
    cfg = GradientSearchConfig(out=str(tmp_path / "d"), method="darts", space=space_name, data="synthetic",
                               epochs=2, warmup_epochs=1, batch_size=16, arch_every=1, max_train=64, max_eval=32,
                               resolution=16 if space_name == "mbv3-tiny" else None, width=0.75 if space_name ==
                               "mbv3-tiny" else None, candidates=[[3, 3], [5, 4]] if space_name == "mbv3-tiny"
                               else None, nb201_channels=4, plots=space_name == "nb201")
    res = run_search(cfg)
    blob = json.loads((tmp_path / "d/arch.json").read_text())
    space = get_space(space_name)
    assert space.validate(blob["arch"]) == blob["arch"] == res.arch
    assert blob["method"] == "darts" and blob["derived_by"] == "argmax"
    assert len(res.history["alpha"]) > 0
    moved = [max(abs(v - 1 / len(p)) for v in p) for p in res.history["alpha"][-1]["probs"]]
    assert max(moved) > 0  # alpha was trained
