"""Memory and roofline on hand-computed small nets; the analytic MBV3 model equals the traced graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.hardware.devices import load_device
from edgenas.hardware.graph import graph_ops
from edgenas.hardware.layers import MBV3Layers
from edgenas.hardware.memory import ParamBytes, PeakMemory, arch_memory, model_memory
from edgenas.hardware.roofline import RooflineLatency, arch_ops, roofline


def plain_net() -> nn.Module:
    # 1x3x8x8 -> conv3x3(3->8) -> BN -> ReLU -> conv1x1(8->4)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 1, bias=False))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 1, bias=False)
        self.act = nn.ReLU()
        self.b = nn.Conv2d(8, 4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.act(self.a(x)))


def test_plain_net_by_hand():
    mem = model_memory(plain_net(), (1, 3, 8, 8), "fp32")
    assert mem["params"] == 3 * 8 * 9 + 2 * 8 + 8 * 4  # 264
    assert mem["param_bytes"] == 264 * 4
    # conv1: input 192 + output 512; conv2: 512 + 256 (BN and ReLU work in place)
    assert mem["peak_activation_elems"] == 768 and mem["peak_at"] == "3"
    assert model_memory(plain_net(), (1, 3, 8, 8), "int8")["peak_activation_bytes"] == 768


def test_residual_net_by_hand():
    # input 64 kept for the add; conv a: 64 + 128; conv b: 128 + 64 + 64; the add writes in place
    mem = model_memory(Residual(), (1, 4, 4, 4))
    assert mem["peak_activation_elems"] == 256 and mem["peak_at"] == "b"


def test_roofline_by_hand(tmp_path):
    (tmp_path / "toy.yaml").write_text("name: toy\npeak_gops: {fp32: 10}\nmemory_bandwidth_gbs: 1\n")
    dev = load_device(str(tmp_path / "toy.yaml"))
    points, s = roofline(graph_ops(plain_net(), (1, 3, 8, 8)).ops, dev)
    conv1, conv2 = points
    assert conv1.flops == 2 * 8 * 3 * 9 * 64 and conv1.bytes == (216 + 192 + 512) * 4
    assert conv1.intensity == pytest.approx(27648 / 3680)
    assert conv1.bound == "memory" and conv1.attainable_gops == pytest.approx(27648 / 3680 * 1.0)
    assert conv1.time_ms == pytest.approx(3680 / 1e9 * 1e3)
    assert conv2.flops == 2 * 4 * 8 * 64 and conv2.bytes == (32 + 512 + 256) * 4
    bn_bytes = 16 * 4  # BN parameters are read, at no FLOPs
    assert s["bytes"] == conv1.bytes + conv2.bytes + bn_bytes
    assert s["flops"] == conv1.flops + conv2.flops
    assert s["time_ms_lower_bound"] == pytest.approx((conv1.bytes + conv2.bytes + bn_bytes) / 1e9 * 1e3)
    assert s["utilization"] == pytest.approx(s["flops"] / (s["time_ms_lower_bound"] * 1e-3) / 1e10)
    assert s["ridge_intensity"] == 10.0


def test_analytic_mbv3_equals_the_traced_graph(micro, rng):
    layers = MBV3Layers(micro, 10)
    for _ in range(3):
        arch = micro.sample(rng)
        r = micro.resolution(arch)
        graph = graph_ops(micro.build(arch, 10), (1, 3, r, r))
        ops = arch_ops(micro, arch, 10)
        assert sum(o.flops for o in ops) == graph.totals()["flops"]
        assert sum(o.weight_elems for o in ops) == graph.totals()["weight_elems"]
        assert sum(o.in_elems + o.out_elems for o in ops) == graph.totals()["activation_elems"]
        ids = layers.batch_layer_ids([arch])
        assert np.append(layers.layer_peak, 0)[ids].max() == graph.peak_live_elems()[0]


def test_memory_and_roofline_evaluators_are_vectorised(micro, rng, tmp_path):
    archs = [micro.sample(rng) for _ in range(6)]
    pb, pm = ParamBytes(micro, 10, precision="int8"), PeakMemory(micro, 10, precision="fp16")
    assert pb.instant and pm.instant
    for a, b, m in zip(archs, pb.evaluate_batch(archs), pm.evaluate_batch(archs), strict=True):
        ref = arch_memory(micro, a, 10, 3, "int8")
        assert b == ref["param_bytes"]
        assert m == 2 * ref["peak_activation_elems"]
    dev = load_device("zu9eg")
    ev = RooflineLatency(micro, dev, 10)
    for a, t in zip(archs, ev.evaluate_batch(archs), strict=True):
        _, s = roofline(arch_ops(micro, a, 10), dev)
        assert t == pytest.approx(s["time_ms_lower_bound"])


def test_untraceable_model_is_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(EdgenasError, match="cannot read the graph of Branchy"):
        model_memory(Branchy(), (1, 3, 4, 4))
