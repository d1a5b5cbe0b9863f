"""Latency tables: prediction, calibration, save/load, resumable profiling, OFA/ProxylessNAS YAML, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgenas.hardware.layer_measure as layer_measure
from edgenas.errors import EdgenasError
from edgenas.hardware.layers import MBV3Layers
from edgenas.hardware.lut import Calibration, LatencyTable, native_keys, profile_lut
from edgenas.hardware.measure import LatencyMeter, MeasureSettings
from edgenas.spaces import get_space

MICRO = "tests.micro_space:micro_space"


def fake_ms(layer) -> float:
    """A made-up layer latency: a fixed overhead plus a cost per MAC."""
    return 0.01 + layer.macs() * 1e-6


def synthetic_table(space, classes=10, skip=()) -> LatencyTable:
    layers = MBV3Layers(space, classes)
    entries = {lay.key: {"median": fake_ms(lay), "mean": fake_ms(lay), "std": 0.0, "min": fake_ms(lay), "count": 5}
               for lay in layers.layers if lay.key not in skip}
    meta = {"space": space.name, "space_config": space.to_dict(), "num_classes": classes, "in_channels": 3,
            "resolutions": list(space.mbv3.resolutions), "backend": "onnxruntime", "threads": 1}
    return LatencyTable(entries, meta, Calibration(), native_keys, "median", "synthetic")


def test_prediction_is_the_sum_of_layers_plus_calibration(micro, rng):
    table = synthetic_table(micro)
    table.calibration = Calibration(a=0.8, b=-0.005, c=0.02)
    model = table.bind(micro, 10)
    archs = [micro.sample(rng) for _ in range(20)]
    layers = MBV3Layers(micro, 10)
    expect = [0.8 * sum(fake_ms(x) for x in layers.arch_layers(a)) - 0.005 * len(layers.arch_layers(a)) + 0.02
              for a in archs]
    assert np.allclose(model.predict(archs), expect)


def test_calibration_recovers_the_relation_despite_an_outlier(rng):
    s = rng.uniform(0.5, 2.0, 30)
    n = rng.integers(10, 25, 30).astype(float)
    y = 0.7 * s - 0.01 * n + 0.05
    y[4] *= 1.5  # one disturbed measurement
    cal = Calibration.fit(s, n, y)
    assert cal.a == pytest.approx(0.7, rel=1e-3) and cal.b == pytest.approx(-0.01, rel=1e-2)
    assert Calibration.fit(s[:3], n[:3], 2 * s[:3]).a == pytest.approx(2.0)  # too few: ratio only


def test_save_load_round_trip(micro, rng, tmp_path):
    table = synthetic_table(micro)
    table.calibration = Calibration(1.1, 0.001, 0.0, 5)
    table.save(tmp_path / "lut.json")
    again = LatencyTable.load(tmp_path / "lut.json")
    archs = [micro.sample(rng) for _ in range(10)]
    assert np.allclose(again.bind(micro).predict(archs), table.bind(micro).predict(archs))
    assert again.calibration == table.calibration


def test_missing_key_names_the_key_and_what_the_table_was_built_for(micro, rng):
    layers = MBV3Layers(micro, 10)
    lost = next(lay.key for lay in layers.layers if lay.op == "mbconv" and lay.size == 12 // 2)
    table = synthetic_table(micro, skip={lost})
    archs = [micro.sample(rng) for _ in range(200)]
    with pytest.raises(EdgenasError, match=f"no entry '{lost}'.*built for space 'micro'.*resolutions"):
        table.bind(micro).predict(archs)
    # A table built for 100 classes lacks this classifier.
    with pytest.raises(EdgenasError, match=r"no entry 'linear-in:32x1x1-out:10'.*100 classes"):
        t100 = synthetic_table(micro, 100)
        t100.bind(micro, 10).predict(archs[:1])


def test_table_for_another_space_is_refused(micro):
    table = synthetic_table(micro)
    with pytest.raises(EdgenasError, match="built for space 'micro', not for space 'mbv3-tiny'"):
        table.bind(get_space("mbv3-tiny"))


@pytest.mark.parametrize("content,match", [
    ('{"format": "edgenas-lut/1", "entries": {"a": {"med', "not valid JSON"),
    ('{"format": "something-else"}', "not an edgenas latency table"),
    ('{"format": "edgenas-lut/1", "entries": {"a": {"mean": 1}}}', "malformed entries"),
])
def test_corrupted_or_truncated_table(tmp_path, content, match):
    p = tmp_path / "lut.json"
    p.write_text(content)
    with pytest.raises(EdgenasError, match=match):
        LatencyTable.load(p)
    with pytest.raises(EdgenasError, match="not found"):
        LatencyTable.load(tmp_path / "absent.json")


# ------------------------------------------------------------------------------------------ profiling
@pytest.fixture
def fake_measurement(monkeypatch):
    """Replace the timing of layers and networks by fast made-up numbers (the bookkeeping is under test)."""
    calls = {"layers": 0, "networks": 0}

    def measure_layers(layers, settings, divisor=8, timing=None, on_result=None):
        for lay in layers:
            calls["layers"] += 1
            stats = {"median": fake_ms(lay), "mean": fake_ms(lay), "std": 0.0, "min": fake_ms(lay), "count": 3}
            if on_result:
                on_result(lay.key, stats)
            yield lay.key, stats

    def measure(self, arch):
        calls["networks"] += 1
        lays = MBV3Layers(self.space, self.num_classes).arch_layers(arch)
        return {"median_ms": 0.9 * sum(fake_ms(x) for x in lays) + 0.01, "times_ms": [0.0]}

    monkeypatch.setattr(layer_measure, "measure_layers", measure_layers)
    monkeypatch.setattr(LatencyMeter, "measure", measure)
    return calls


def test_profile_resumes_after_a_kill(micro, tmp_path, fake_measurement, monkeypatch):
    out = tmp_path / "lut.json"
    total = len(MBV3Layers(micro, 10).layers)
    seen = []
    real = layer_measure.measure_layers

    def dying(layers, settings, divisor=8, timing=None, on_result=None):
        for item in real(layers, settings, divisor, timing, on_result):
            seen.append(item)
            if len(seen) == 7:
                raise KeyboardInterrupt  # killed in the middle of a group
            yield item

    monkeypatch.setattr(layer_measure, "measure_layers", dying)
    with pytest.raises(KeyboardInterrupt):
        profile_lut(micro, out, calibrate=6, group=5)
    partial = tmp_path / "lut.json.partial.jsonl"
    assert partial.exists() and not out.exists()
    assert len(partial.read_text().splitlines()) == 1 + 7  # header + everything finished before the kill
    monkeypatch.setattr(layer_measure, "measure_layers", real)
    before = fake_measurement["layers"]
    rep = profile_lut(micro, out, calibrate=6, group=5)
    assert rep.resumed == 7 and rep.measured_now == total - 7 == fake_measurement["layers"] - before
    assert out.exists() and not partial.exists()
    table = LatencyTable.load(out)
    assert len(table.entries) == total and table.calibration.networks == 6
    assert table.calibration.a == pytest.approx(0.9, rel=1e-6)
    assert table.meta["backend"] == "onnxruntime" and table.meta["cpu"]


def test_resuming_with_other_settings_is_refused(micro, tmp_path, fake_measurement):
    out = tmp_path / "lut.json"
    (tmp_path / "lut.json.partial.jsonl").write_text(json.dumps({
        "format": "edgenas-lut-partial/1", "provenance": {"backend": "torch", "threads": 4}}) + "\n")
    with pytest.raises(EdgenasError, match="other settings.*backend"):
        profile_lut(micro, out, calibrate=2)


@pytest.mark.slow
def test_real_layer_timing_in_a_fresh_process(micro):
    layers = MBV3Layers(micro, 10).layers[:3]
    got = dict(layer_measure.measure_layers(layers, MeasureSettings("onnxruntime", 1), 4,
                                            layer_measure.LayerTiming(warmup=2, runs=5, min_seconds=0.0)))
    assert set(got) == {lay.key for lay in layers}
    assert all(0 < s["min"] <= s["median"] and s["count"] >= 5 for s in got.values())


# --------------------------------------------------------------------------------- published tables
def test_ofa_yaml_finds_every_key_for_full_size_archs(shared_data, rng):
    space = get_space("mbv3")
    table = LatencyTable.load(shared_data / "ofa_mbv3" / "lut")
    model = table.bind(space)
    archs = []
    for _ in range(300):
        a = space.sample(rng)
        a["width"], a["resolution"] = 1.2, int(rng.choice([160, 176, 192, 208, 224]))
        archs.append(a)
    ms = model.predict(archs)
    assert np.isfinite(ms).all() and (ms > 5).all() and (ms < 100).all()
    # The largest network at 224 px is slower than the smallest at 160 px.
    big, small = space.extreme(smallest=False), space.extreme(smallest=True)
    big.update(width=1.2, resolution=224)
    small.update(width=1.2, resolution=160)
    assert model.predict([big])[0] > 2 * model.predict([small])[0]


def test_ofa_yaml_names_the_missing_key(shared_data, rng):
    space = get_space("mbv3")
    model = LatencyTable.load(shared_data / "ofa_mbv3" / "lut").bind(space)
    a = space.sample(rng)
    a.update(width=1.0, resolution=224)
    with pytest.raises(EdgenasError, match=r"no entry 'Conv-input:224x224x3-output:112x112x16'.*width 1\.2"):
        model.predict([a])
    a.update(width=1.2, resolution=168)
    with pytest.raises(EdgenasError, match="resolution 168.*resolution\\(s\\) \\[160, 176, 192, 208, 224\\]"):
        model.predict([a])


def test_proxylessnas_yaml_loads_but_covers_another_space(shared_data, rng):
    table = LatencyTable.load(shared_data / "ofa_mbv3" / "lut" / "proxylessnas_pixel1_mobile_trim.yaml")
    assert table.meta["published"] == "proxyless" and len(table.entries) > 60
    space = get_space("mbv3")
    a = space.sample(rng)
    a.update(width=1.0, resolution=224)
    with pytest.raises(EdgenasError, match="no entry 'Conv-input:224x224x3-output:112x112x16'.*ProxylessNAS"):
        table.bind(space).predict([a])


def test_truncated_yaml_is_a_clear_error(shared_data, tmp_path):
    text = (shared_data / "ofa_mbv3" / "lut" / "note10_224_lookup_table.yaml").read_text()
    bad = tmp_path / "note10_224_lookup_table.yaml"
    bad.write_text(text[: len(text) // 2 - 7])
    with pytest.raises(EdgenasError, match="note10_224_lookup_table.yaml"):
        LatencyTable.load(bad)
    (tmp_path / "x.yaml").write_text("a: [1, 2\n")
    with pytest.raises(EdgenasError, match="not valid YAML"):
        LatencyTable.load(tmp_path / "x.yaml")


def test_lut_target_is_instant_and_vectorised(micro, rng, tmp_path):
    from edgenas.evaluators import EvalContext, make_target

    synthetic_table(micro).save(tmp_path / "lut.json")
    ev = make_target(f"lut:{tmp_path / 'lut.json'}", EvalContext(micro, "synthetic"))
    archs = [micro.sample(rng) for _ in range(50)]
    assert ev.instant and ev.name == "latency" and ev.unit == "ms"
    assert np.allclose(ev.evaluate_batch(archs), [ev(a) for a in archs])
    assert Path(tmp_path / "lut.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_drift_corrected_measurement_scales_a_ratio_to_the_reference(micro, rng, tmp_path, backend):
    settings = MeasureSettings(backend, runs=12, warmup=2, min_seconds=0.02, processes=1, rounds=3)
    meter = LatencyMeter(micro, 10, 3, settings, tmp_path)
    scale = meter.reference_ms()
    same = meter.measure(meter.reference)
    assert same["ratios"][0] == pytest.approx(1.0, abs=0.2)  # the reference against itself
    assert same["median_ms"] == pytest.approx(scale * same["ratios"][0])
    big = meter.measure(micro.extreme(smallest=False))
    small = meter.measure(micro.extreme(smallest=True))
    assert big["ratios"][0] > small["ratios"][0] and big["raw_median_ms"] > 0
    assert LatencyMeter(micro, 10, 3, settings, tmp_path).reference_ms() == scale  # the scale is cached
    plain = LatencyMeter(micro, 10, 3, MeasureSettings(backend, drift_correction=False), tmp_path)
    assert plain.reference is None
    with pytest.raises(EdgenasError, match="does not use drift correction"):
        plain.reference_ms()


def test_table_for_another_backend_is_refused(micro, tmp_path):
    from edgenas.hardware.workflows import check_table_settings

    synthetic_table(micro).save(tmp_path / "lut.json")  # built for onnxruntime, 1 thread
    check_table_settings(str(tmp_path / "lut.json"), "onnxruntime", 1)
    with pytest.raises(EdgenasError, match="built for onnxruntime with 1 thread.*not for torch with 1"):
        check_table_settings(str(tmp_path / "lut.json"), "torch", 1)
