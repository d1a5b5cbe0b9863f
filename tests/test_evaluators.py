from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.evaluators import EvalContext, make_cost, make_estimator, make_target
from edgenas.hardware.flops import count_macs, count_params
from edgenas.hardware.measure import LatencyMeter, MeasureSettings


def test_counts_on_a_hand_computed_net():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    assert count_params(net) == 3 * 8 * 9 + 8 * 16 * 5 + 5
    # conv: 8 output channels x 16 positions x 27 MACs; linear: 128 x 5
    assert count_macs(net, 4, 3) == 8 * 16 * 27 + 128 * 5


def test_cost_evaluators_on_the_space(micro, rng):
    ctx = EvalContext(space=micro, data_spec="synthetic")
    arch = micro.sample(rng)
    params, flops = make_cost("params", ctx), make_cost("flops", ctx)
    model = micro.build(arch, 10, 3)
    assert params(arch) == count_params(model)
    assert flops(arch) == count_macs(model, micro.resolution(arch), 3) > 0
    assert params.direction == flops.direction == "minimize"


def test_train_estimator_learns_and_is_deterministic(micro):
    ctx = EvalContext(space=micro, data_spec="synthetic", epochs=3, seed=0)
    est = make_estimator("train", ctx)
    arch = micro.extreme(smallest=False)
    a, b = est(arch), est(arch)
    assert a == b
    assert a > 30.0  # 10 classes: chance is 10%


def test_latency_is_measured_in_a_fresh_process_and_cached(micro, rng, tmp_path):
    meter = LatencyMeter(micro, 10, 3, MeasureSettings(runs=20, warmup=5, min_seconds=0.05), tmp_path)
    arch = micro.sample(rng)
    first = meter(arch)
    assert 0 < first < 100
    rows = [json.loads(line) for line in (tmp_path / "latency.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["key"].startswith("reference-scale-")  # the drift-correction scale
    assert rows[1]["median_ms"] == first
    again = LatencyMeter(micro, 10, 3, MeasureSettings(runs=20, warmup=5, min_seconds=0.05), tmp_path)
    assert again.cached(arch) == first  # a new meter (a resumed search) reuses the cache
    other_threads = LatencyMeter(micro, 10, 3, MeasureSettings(threads=2, runs=20), tmp_path)
    assert other_threads.cached(arch) is None  # keyed by settings too


def test_a_network_whose_output_ignores_its_input_is_measured():
    """An NB201 cell whose edges into the output node are all 'none' exports to ONNX without an input."""
    from edgenas.spaces import get_space

    nb = get_space("nb201")
    arch = {"edge_0_1": "none", "edge_0_2": "none", "edge_1_2": "avg_pool_3x3", "edge_0_3": "none",
            "edge_1_3": "avg_pool_3x3", "edge_2_3": "nor_conv_1x1"}
    meter = LatencyMeter(nb, 10, 3, MeasureSettings(runs=10, warmup=2, min_seconds=0.01, processes=1,
                                                    drift_correction=False))
    assert 0 < meter.measure(arch)["median_ms"] < 100


def test_torch_backend_measures(micro, rng):
    meter = LatencyMeter(micro, 10, 3, MeasureSettings(backend="torch", runs=10, warmup=2, min_seconds=0.01))
    result = meter.measure(micro.sample(rng))
    assert result["median_ms"] > 0 and len(result["times_ms"]) >= 10


def test_unknown_names_list_valid_ones(micro):
    ctx = EvalContext(space=micro)
    with pytest.raises(EdgenasError, match="unknown target 'gpu'; valid: accel:..., cpu, .*did you mean 'cpu'"):
        make_target("gpu", ctx)
    with pytest.raises(EdgenasError, match="unknown estimator 'xyz'"):
        make_estimator("xyz", ctx)
    with pytest.raises(EdgenasError, match="unknown latency backend"):
        MeasureSettings(backend="tvm")


def test_shared_data_dir_error(micro, monkeypatch):
    monkeypatch.delenv("EDGENAS_DATA", raising=False)
    with pytest.raises(EdgenasError, match="EDGENAS_DATA"):
        EvalContext(space=micro).shared_data_dir()


def test_model_features_are_the_pre_pool_map(micro, rng):
    arch = micro.sample(rng)
    model = micro.build(arch, 10, 3).eval()
    r = micro.resolution(arch)
    x = torch.randn(2, 3, r, r)
    assert model.features(x).ndim == 4
