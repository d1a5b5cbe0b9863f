"""Device profiles, the latency targets of a search, and the ``edgenas latency`` / ``roofline`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.evaluators import EvalContext, make_cost, make_target, valid_targets
from edgenas.hardware.devices import list_devices, load_device
from edgenas.spaces import get_space
from tests.conftest import REPO
from tests.test_hw_lut import synthetic_table
from tests.test_hw_predictor import synthetic_latency

MICRO = "tests.micro_space:micro_space"


def test_shipped_profiles_cite_their_figures():
    names = list_devices()
    for required in ("raspi4", "jetson-nano", "zu9eg", "zu3eg"):
        assert required in names
    for name in names:
        d = load_device(name)
        assert d.sources, f"{name} cites no source"
        if d.peak_gops:
            assert d.memory_bandwidth_gbs and d.notes.get("peak_derivation")
    assert load_device("zu9eg").peak("int8") > load_device("zu3eg").peak("int8")


def test_bad_profiles(tmp_path):
    with pytest.raises(EdgenasError, match="unknown device 'raspi5'.*did you mean 'raspi4'"):
        load_device("raspi5")
    (tmp_path / "bad.yaml").write_text("name: x\npeak_gops: {fp32: -3}\n")
    with pytest.raises(EdgenasError, match="peak_gops must map"):
        load_device(str(tmp_path / "bad.yaml"))
    with pytest.raises(EdgenasError, match="no peak compute for int8"):
        load_device("raspi4").peak("int8")


def test_a_relative_data_folder_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "ref").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGENAS_DATA", "ref")  # as typed: EDGENAS_DATA=../shared/data
    assert load_device("note10").lut_path() == str(tmp_path / "ref" / "ofa_mbv3" / "lut")
    monkeypatch.delenv("EDGENAS_DATA")
    with pytest.raises(EdgenasError, match=r"device 'note10' needs \$\{EDGENAS_DATA\}"):
        load_device("note10").lut_path()


def test_every_kind_of_target_answers_in_ms(micro, rng, tmp_path, monkeypatch):
    ctx = EvalContext(micro, "synthetic")
    archs = [micro.sample(rng) for _ in range(30)]
    synthetic_table(micro).save(tmp_path / "lut.json")
    from edgenas.hardware.predictor import LatencyPredictor

    LatencyPredictor(micro, "linear", folds=0).fit(archs, synthetic_latency(micro, archs, rng)).save(tmp_path / "p.npz")
    (tmp_path / "dev.yaml").write_text(f"name: mine\nlut: {tmp_path / 'lut.json'}\n")
    for spec in (f"lut:{tmp_path / 'lut.json'}", f"predictor:{tmp_path / 'p.npz'}", "raspi4", "zu3eg",
                 f"device:{tmp_path / 'dev.yaml'}"):
        ev = make_target(spec, ctx)
        assert ev.name == "latency" and ev.unit == "ms" and ev.instant, spec
        vals = ev.evaluate_batch(archs)
        assert all(isinstance(v, float) and v > 0 for v in vals)
        assert vals[3] == pytest.approx(ev(archs[3]))
    assert {"raspi4", "lut:...", "predictor:...", "device:..."} <= set(valid_targets())
    for cost in ("param_bytes", "peak_memory"):
        assert make_cost(cost, ctx)(archs[0]) > 0
    monkeypatch.delenv("EDGENAS_DATA", raising=False)
    with pytest.raises(EdgenasError, match=r"needs \$\{EDGENAS_DATA\}"):
        make_target("note10", EvalContext(get_space("mbv3"), "synthetic"))


def test_predictor_target_for_another_space_is_refused(micro, rng, tmp_path):
    archs = [micro.sample(rng) for _ in range(30)]
    from edgenas.hardware.predictor import LatencyPredictor

    LatencyPredictor(micro, "linear", folds=0).fit(archs, synthetic_latency(micro, archs, rng)).save(tmp_path / "p.npz")
    with pytest.raises(EdgenasError, match="trained for space 'micro', not for space 'mbv3-tiny'"):
        make_target(f"predictor:{tmp_path / 'p.npz'}", EvalContext(get_space("mbv3-tiny"), "synthetic"))


def test_nb201_space_uses_the_device_column(shared_data):
    ev = make_target("raspi4", EvalContext(get_space("nb201"), "synthetic", bench_data=str(shared_data)))
    assert "raspi4" in ev.describe()


# ------------------------------------------------------------------------------------------------ CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgenas", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def dataset(micro, tmp_path):
    rng = np.random.default_rng(3)
    archs = [micro.sample(rng) for _ in range(80)]
    y = synthetic_latency(micro, archs, rng)
    lines = [json.dumps({"arch": a, "latency_ms": float(v)}) for a, v in zip(archs, y, strict=True)]
    lines[4] = json.dumps({"arch": {**archs[4], "s1.b1.kernel": 4}, "latency_ms": 1.0})  # an invalid arch
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "d.jsonl"


@pytest.mark.slow
def test_cli_fit_eval_and_bad_input(dataset, tmp_path):
    fit = ["latency", "fit", "--space", MICRO, "--dataset", str(dataset), "--model", "linear", "--holdout", "20",
           "--out", str(tmp_path / "p.npz")]
    r = _cli(*fit)
    assert r.returncode == 2 and "d.jsonl line 5: stage 1 block 1 kernel 4 not in" in r.stderr
    assert not (tmp_path / "p.npz").exists()
    r = _cli(*fit, "--skip-invalid")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["trained_on"] == 59 and rep["holdout"]["within_10_pct"] > 90 and rep["skipped_lines"] == 1
    r = _cli("latency", "eval", "--space", MICRO, "--predictor", str(tmp_path / "p.npz"), "--dataset",
             str(dataset), "--skip-invalid", "--plot", str(tmp_path / "fid.png"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 79 and (tmp_path / "fid.png").stat().st_size > 10_000
    (tmp_path / "broken.json").write_text('{"format": "edgenas-lut/1", "entr')
    r = _cli("latency", "eval", "--space", MICRO, "--lut", str(tmp_path / "broken.json"), "--dataset", str(dataset))
    assert r.returncode == 2 and "not valid JSON" in r.stderr and r.stderr.count("\n") == 1
    r = _cli("latency", "eval", "--space", "mbv3-tiny", "--predictor", str(tmp_path / "p.npz"), "--dataset",
             str(dataset))
    assert r.returncode == 2 and "trained for space 'micro'" in r.stderr


@pytest.mark.slow
def test_cli_roofline_draws_the_layers(tmp_path):
    space = get_space("mbv3-tiny")
    (tmp_path / "arch.json").write_text(json.dumps(space.sample(np.random.default_rng(0))))
    r = _cli("roofline", str(tmp_path / "arch.json"), "--device", "raspi4", "--out", str(tmp_path / "r.png"),
             "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["roofline"]["device"] == "raspi4" and len(rep["ops"]) > 20
    assert rep["memory"]["peak_activation_bytes"] > 0 and (tmp_path / "r.png").stat().st_size > 10_000
    r = _cli("roofline", str(tmp_path / "arch.json"), "--device", "note10")
    assert r.returncode == 2 and "no peak compute" in r.stderr
