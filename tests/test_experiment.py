from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest

from edgenas.errors import ConstraintUnsatisfiable, EdgenasError
from edgenas.experiment import Experiment, ExperimentConfig, run_search
from edgenas.export import export_trial
from edgenas.report import write_report
from edgenas.spaces import get_space
from edgenas.store import TrialStore

from .conftest import REPO

MICRO = "tests.micro_space:micro_space"


def config(out, **kw) -> ExperimentConfig:
    base = dict(out=str(out), space=MICRO, data="synthetic", estimator="train", target=None, strategy="evolution",
                budget=6, objectives=["accuracy", "params"], epochs=1, population_size=4, sample_size=2)
    base.update(kw)
    return ExperimentConfig(**base)


def test_search_stores_every_trial_and_writes_outputs(tmp_path):
    result = run_search(config(tmp_path))
    assert len(result.records) == 6 and all(r.feasible for r in result.records)
    rows = list(csv.DictReader((tmp_path / "trials.csv").read_text().splitlines()))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    assert {"accuracy", "params", "flops", "arch"} <= set(rows[0])
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert pareto["best"]["trial"] == result.best.number
    assert len(pareto["front"]) == len(result.front) >= 1
    assert len(list((tmp_path / "weights").glob("*.pt"))) == 6
    assert len(TrialStore.open(tmp_path).records()) == 6


def test_resume_continues_without_duplicates(tmp_path):
    run_search(config(tmp_path, budget=4))
    with pytest.raises(EdgenasError, match="already holds a search"):
        run_search(config(tmp_path, budget=8))
    result = run_search(config(tmp_path, budget=8), resume=True)
    space = get_space(MICRO)
    keys = [space.key(r.arch) for r in result.records]
    assert len(keys) == 8 == len(set(keys))
    with pytest.raises(EdgenasError, match="different seed"):
        run_search(config(tmp_path, budget=9, seed=5), resume=True)


def test_constraints_skip_training_and_are_respected(tmp_path):
    limit = 6_000
    result = run_search(config(tmp_path, budget=5, constraints={"params": limit}, strategy="random"))
    infeasible = [r for r in result.records if not r.feasible]
    assert infeasible, "this limit should reject some micro archs"
    assert all("accuracy" not in r.metrics for r in infeasible)  # never trained
    assert all(r.metrics["params"] <= limit for r in result.records if r.feasible)
    assert sum(r.feasible for r in result.records) == 5


def test_unreachable_constraint_is_reported_with_smallest_value(tmp_path):
    with pytest.raises(ConstraintUnsatisfiable, match=r"smallest architecture has params \d+"):
        run_search(config(tmp_path, constraints={"params": 10}))


def test_grid_stops_when_space_is_exhausted(tmp_path):
    small = config(tmp_path, strategy="grid", budget=10_000, objectives=["accuracy"], epochs=1, max_train=64)
    result = Experiment(small)
    result.space.size = lambda: 3  # the grid is built from enumerate(); shrink it for speed
    result.strategy._order = result.strategy._order[:3]
    out = result.run()
    assert len(out.records) == 3 and "every architecture" in out.stopped_because


def test_report_and_export(tmp_path):
    run_search(config(tmp_path, budget=3))
    html = write_report(tmp_path)
    assert html.exists() and (tmp_path / "pareto.png").stat().st_size > 1000
    assert "Pareto front" in html.read_text()
    r = export_trial(tmp_path, "best", tmp_path / "model.onnx")
    assert r.reused_weights and r.max_abs_diff <= 1e-4
    meta = json.loads((tmp_path / "model.json").read_text())
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"))
    x = np.zeros(meta["input"], np.float32)
    assert sess.run(None, {"input": x})[0].shape == (1, 10)
    with pytest.raises(EdgenasError, match="trial 99 is not in"):
        export_trial(tmp_path, "99")


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edgenas", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, **kw)


SEARCH = ["search", "--space", MICRO, "--data", "synthetic", "--estimator", "train", "--epochs", "1",
          "--objectives", "accuracy,params", "--strategy", "evolution", "--population", "4", "--quiet"]


@pytest.mark.slow
def test_kill_and_resume_subprocess(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "edgenas", *SEARCH, "--budget", "40", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if (out / "trials.csv").exists():  # rewritten atomically after each stored trial
            stored = len((out / "trials.csv").read_text().splitlines()) - 1
            if stored >= 3:
                break
    assert proc.poll() is None, f"search ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(TrialStore.open(out).records())
    assert 3 <= killed_at < 40
    r = _cli(*SEARCH, "--budget", "12", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    records = TrialStore.open(out).records()
    space = get_space(MICRO)
    keys = [space.key(x.arch) for x in records]
    assert len(records) == max(12, killed_at) and len(set(keys)) == len(keys)


@pytest.mark.slow
def test_cli_end_to_end_with_measured_latency(tmp_path):
    out = tmp_path / "cli"
    r = _cli("search", "--space", MICRO, "--data", "synthetic", "--target", "cpu", "--estimator", "train",
             "--epochs", "1", "--strategy", "random", "--budget", "2", "--latency-ms", "50",
             "--objectives", "accuracy,latency", "--seed", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert len(rows) == 2 and all(0 < float(x["latency"]) < 50 for x in rows)
    assert len((out / "cache" / "latency.jsonl").read_text().splitlines()) >= 2
    assert _cli("report", str(out)).returncode == 0 and (out / "report.html").exists()
    e = _cli("export", str(out), "--trial", "best", "--out", str(tmp_path / "m.onnx"))
    assert e.returncode == 0, e.stderr
    assert "max abs diff" in e.stdout and (tmp_path / "m.onnx").exists()


def test_cli_names_a_proxy_score_as_such(tmp_path):
    from edgenas.evaluators import accuracy_label

    assert accuracy_label("train") == "accuracy (%)" and accuracy_label("proxy:zen") == "proxy:zen score"
    out = tmp_path / "zero_shot"
    r = _cli("search", "--space", MICRO, "--data", "synthetic", "--target", "raspi4", "--estimator", "proxy:params",
             "--strategy", "random", "--budget", "3", "--objectives", "accuracy,flops", "--seed", "0",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "best: trial" in r.stderr and "proxy:params score" in r.stderr and "accuracy" not in r.stderr


def test_cli_estimator_options_reach_the_proxy_and_are_stored(tmp_path):
    out = tmp_path / "grasp_frozen"
    r = _cli("search", "--space", MICRO, "--data", "synthetic", "--target", "raspi4", "--estimator", "proxy:grasp",
             "--estimator-option", "grasp_hvp=frozen", "--estimator-option", "proxy_batch=8",
             "--strategy", "random", "--budget", "2", "--objectives", "accuracy,flops", "--out", str(out))
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["estimator_options"] == {"grasp_hvp": "frozen", "proxy_batch": 8}


@pytest.mark.parametrize("args, message", [
    (["--space", "mbv3-tny"], "did you mean 'mbv3-tiny'"),
    (["--strategy", "evolve"], "unknown strategy 'evolve'"),
    (["--target", "gpu9"], "unknown target 'gpu9'"),
    (["--estimator", "trian"], "did you mean 'train'"),
    (["--budget", "0"], "--budget must be a positive"),
    (["--data", "npz:/no/such/dir"], "does not exist"),
    (["--objectives", "accuracy,speed"], "unknown metric 'speed'"),
    (["--estimator-option", "grasp_hvp=approx"], "grasp_hvp must be one of exact, frozen"),
    (["--estimator-option", "proxy_bach=8"], "did you mean 'proxy_batch'"),
    (["--estimator-option", "proxy_batch"], "is KEY=VALUE"),
    (["--workers", "0"], "--workers must be a positive"),
    (["--workers", "2", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    r = _cli("search", "--out", str(tmp_path / "x"), "--space", MICRO, "--data", "synthetic", *args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_cli_bad_input_keeps_stored_trials(tmp_path):
    run_search(config(tmp_path, budget=2))
    before = (tmp_path / "trials.csv").read_text()
    r = _cli("search", "--out", str(tmp_path), "--space", MICRO, "--data", "synthetic", "--strategy", "nope",
             "--resume")
    assert r.returncode == 2
    assert (tmp_path / "trials.csv").read_text() == before
    assert len(TrialStore.open(tmp_path).records()) == 2


def test_invalid_arch_json_is_explained(tmp_path):
    from edgenas.export import load_arch_json

    p = tmp_path / "a.json"
    p.write_text("{not json")
    with pytest.raises(EdgenasError, match="not valid JSON"):
        load_arch_json(p)


def test_cli_spaces_lists_sizes():
    r = _cli("spaces")
    assert r.returncode == 0 and "mbv3-tiny" in r.stdout and "e+20" in r.stdout


def test_cli_evaluate_validates_arch_json(tmp_path, micro):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(micro.extreme()))
    r = _cli("evaluate", str(good), "--space", MICRO, "--data", "synthetic")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["params"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**micro.extreme(), "s2.depth": 7}))
    r = _cli("evaluate", str(bad), "--space", MICRO, "--data", "synthetic")
    assert r.returncode == 2 and r.stderr.strip() == "edgenas: error: stage 2 depth 7 not in {1, 2}"



def test_processes_creating_one_store_at_once_all_succeed(tmp_path):
    import multiprocessing

    from tests.store_worker import open_store_at_once

    ctx = multiprocessing.get_context("spawn")
    for rep in range(2):  # without the creation lock, SQLite's table creation races (most runs failed)
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=open_store_at_once, args=(str(tmp_path / f"s{rep}"), barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert outcomes == ["ok"] * 4, outcomes
