"""Latency predictors: they recover synthetic latencies, resist drifted rows, save safely, refuse bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.hardware.datasets import read_latency_dataset
from edgenas.hardware.layers import MBV3Layers
from edgenas.hardware.predictor import LatencyPredictor, window_offset
from edgenas.hardware.regressors import BoostedTrees
from edgenas.spaces import get_space

FAST = {"gbt": {"n_estimators": 40}, "mlp": {"max_iter": 60, "hidden": (16,)}, "linear": {}}


def synthetic_latency(space, archs, rng, noise=0.01):
    """Additive per-layer costs with a non-linear term per layer (like a device), plus noise."""
    layers = MBV3Layers(space, 10)
    per_layer = np.array([0.02 + 2e-7 * lay.macs() + 1e-4 * np.sqrt(lay.params()) for lay in layers.layers])
    ms = layers.sum(per_layer, layers.batch_layer_ids(archs))
    return ms * np.exp(rng.normal(0, noise, len(archs)))


@pytest.mark.parametrize("model", ["linear", "gbt", "mlp"])
def test_predictor_recovers_synthetic_latencies(model, rng):
    space = get_space("mbv3-tiny")
    archs = [space.sample(rng) for _ in range(350)]
    y = synthetic_latency(space, archs, rng)
    pred = LatencyPredictor(space, model, folds=2, robust_rounds=1, model_params=FAST[model]).fit(archs[:250], y[:250])
    rel = np.abs(pred.predict(archs[250:]) / y[250:] - 1)
    assert (rel <= 0.10).mean() >= 0.95
    assert np.median(rel) < 0.03


def test_drifted_rows_do_not_drag_the_fit(rng):
    space = get_space("mbv3-tiny")
    archs = [space.sample(rng) for _ in range(400)]
    clean = synthetic_latency(space, archs, rng, noise=0.005)
    y = clean.copy()
    y[40:100] *= 1.25  # a run of consecutive slow measurements (15% of the training rows)
    robust = LatencyPredictor(space, "linear", folds=3, offset="median").fit(archs[:300], y[:300])
    rel = robust.predict(archs[300:]) / clean[300:] - 1
    assert abs(np.median(rel)) < 0.01  # a least-squares fit would sit ~3.5% high


def test_window_offset_centres_the_densest_window():
    rng = np.random.default_rng(0)
    r = np.concatenate([rng.normal(0.0, 0.01, 850), rng.normal(0.22, 0.01, 150)])  # 15% slow mode
    assert abs(window_offset(r, 0.10)) < 0.03
    skew = rng.gamma(2.0, 0.04, 2000) - 0.08  # right-skewed residuals
    c = window_offset(skew, 0.10)
    inside = lambda s: np.mean(np.abs(np.exp(skew - s) - 1) <= 0.10)  # noqa: E731
    assert inside(c) >= inside(float(np.median(skew))) - 1e-9


def test_boosted_trees_numpy_prediction_equals_sklearn(rng):
    from sklearn.ensemble import GradientBoostingRegressor

    X = rng.normal(size=(300, 6))
    y = X[:, 0] * 2 + np.sin(X[:, 1]) + 0.1 * rng.normal(size=300)
    ours = BoostedTrees(n_estimators=40, max_depth=3, learning_rate=0.05, random_state=1).fit(X, y)
    ref = GradientBoostingRegressor(loss="huber", alpha=0.9, n_estimators=40, max_depth=3, learning_rate=0.05,
                                    subsample=0.8, max_features=0.5, random_state=1).fit(X, y)
    assert np.allclose(ours.predict(X), ref.predict(X), atol=1e-12)
    assert np.allclose(ours.predict(X[:5]), ref.predict(X[:5]), atol=1e-12)  # the few-rows path


@pytest.mark.parametrize("model", ["gbt", "mlp"])
def test_save_load_round_trip_and_space_check(model, rng, tmp_path):
    space = get_space("mbv3-tiny")
    archs = [space.sample(rng) for _ in range(60)]
    y = synthetic_latency(space, archs, rng)
    pred = LatencyPredictor(space, model, folds=0, robust_rounds=0, model_params=FAST[model]).fit(archs, y)
    path = tmp_path / "p.npz"
    pred.save(path)
    again = LatencyPredictor.load(path)
    assert np.array_equal(again.predict(archs[:30]), pred.predict(archs[:30]))
    with np.load(path, allow_pickle=False) as data:  # nothing in it needs unpickling
        assert "meta" in data.files
    with pytest.raises(EdgenasError, match="trained for space 'mbv3-tiny', not for space 'mbv3'"):
        LatencyPredictor.load(path, get_space("mbv3"))


def test_predictor_with_lut_features_round_trips(micro, rng, tmp_path):
    from tests.test_hw_lut import synthetic_table

    lut = synthetic_table(micro).bind(micro)
    archs = [micro.sample(rng) for _ in range(80)]
    y = lut.predict(archs) * 1.3
    pred = LatencyPredictor(micro, "linear", lut=lut, folds=2).fit(archs, y)
    pred.save(tmp_path / "p.npz")
    again = LatencyPredictor.load(tmp_path / "p.npz", micro)  # the table travels inside the file
    assert np.allclose(again.predict(archs), pred.predict(archs))
    assert np.median(np.abs(pred.predict(archs) / y - 1)) < 0.01


def test_corrupted_or_foreign_predictor_files(rng, tmp_path):
    space = get_space("mbv3-tiny")
    archs = [space.sample(rng) for _ in range(40)]
    pred = LatencyPredictor(space, "linear", folds=0).fit(archs, synthetic_latency(space, archs, rng))
    pred.save(tmp_path / "p.npz")
    blob = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(EdgenasError, match="corrupted or truncated"):
        LatencyPredictor.load(tmp_path / "cut.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(EdgenasError, match="corrupted or truncated"):
        LatencyPredictor.load(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"format": "x"})))
    with pytest.raises(EdgenasError, match="not an edgenas latency predictor"):
        LatencyPredictor.load(tmp_path / "other.npz")
    with pytest.raises(EdgenasError, match="not found"):
        LatencyPredictor.load(tmp_path / "absent.npz")


def test_fit_rejects_bad_latencies(rng):
    space = get_space("mbv3-tiny")
    archs = [space.sample(rng) for _ in range(20)]
    with pytest.raises(EdgenasError, match="positive finite"):
        LatencyPredictor(space, "linear").fit(archs, [1.0] * 19 + [-1.0])
    with pytest.raises(EdgenasError, match="unknown predictor model 'svm'"):
        LatencyPredictor(space, "svm")


def _write_dataset(path, space, rng, bad_line=None):
    lines = []
    for i in range(30):
        rec = {"arch": space.sample(rng), "latency_ms": 1.0 + i / 30}
        if i + 1 == bad_line:
            rec["arch"] = {**rec["arch"], "s1.depth": 9}
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


def test_dataset_invalid_line_stops_or_is_skipped(tmp_path, rng):
    space = get_space("mbv3-tiny")
    _write_dataset(tmp_path / "d.jsonl", space, rng, bad_line=7)
    with pytest.raises(EdgenasError, match="d.jsonl line 7: stage 1 depth 9 not in.*--skip-invalid"):
        read_latency_dataset(tmp_path / "d.jsonl", space)
    data = read_latency_dataset(tmp_path / "d.jsonl", space, on_error="skip")
    assert len(data) == 29 and data.lines[6] == 8 and "line 7" in data.skipped[0]


def test_dataset_of_ofa_subnets_with_device_columns(shared_data):
    space = get_space("mbv3")
    path = shared_data / "ofa_mbv3" / "ofa_mbv3_gpu_latency_ms.jsonl"
    with pytest.raises(EdgenasError, match="pick one with --column"):
        read_latency_dataset(path, space, limit=3)
    data = read_latency_dataset(path, space, column="v100_1", limit=50)
    assert len(data) == 50 and (data.latency_ms > 1).all()
