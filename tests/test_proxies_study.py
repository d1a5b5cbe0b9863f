"""Proxies as estimators, the correlation study and its command (tiny samples)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgenas.cli import app, main
from edgenas.errors import EdgenasError
from edgenas.estimators.proxies.study import StudySettings, correlation, run_study, sample_archs
from edgenas.evaluators import EvalContext, make_estimator
from edgenas.spaces import get_space
from tests.conftest import REPO

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> str | None:
    path = os.environ.get("EDGENAS_DATA") or str(ROOT.parent / "shared" / "data")
    found = Path(path, "nb201", "nb201_accuracy.csv").is_file() and Path(path, "cifar10").is_dir()
    return path if found else None


needs_data = pytest.mark.skipif(shared_data() is None,
                                reason="reference data (../shared/data or EDGENAS_DATA) absent")


def small_arch(space, seed: int = 0) -> dict:
    arch = space.sample(np.random.default_rng(seed))
    arch["resolution"] = 16
    return space.validate(arch)


# ------------------------------------------------------------------------------------------- estimator
def test_proxy_estimator_scores_memoises_and_reports_nonfinite_as_minus_inf() -> None:
    space = get_space("mbv3-tiny")
    ctx = EvalContext(space=space, data_spec="synthetic", options={"proxy_batch": 8})
    est = make_estimator("proxy:synflow", ctx)
    assert est.direction == "maximize" and est.name == "proxy:synflow"
    arch = small_arch(space)
    value = est(arch)
    assert math.isfinite(value) and est(arch) == value
    est._memo[space.key(arch)] = float("nan")  # as if the network had produced NaN
    assert est(arch) == -math.inf and est.nonfinite == 1


def test_ensemble_estimator_is_a_vote_in_unit_interval() -> None:
    space = get_space("mbv3-tiny")
    ctx = EvalContext(space=space, data_spec="synthetic", options={"proxy_batch": 8, "ensemble_reference": 4})
    est = make_estimator("proxy:synflow+params", ctx)
    assert est.name == "proxy:synflow+params"
    big = space.validate({**space.extreme(smallest=False), "resolution": 16})
    small = space.validate({**space.extreme(smallest=True), "resolution": 16})
    assert 0.0 <= est(small) < est(big) <= 1.0


def test_grasp_estimator_takes_the_hessian_vector_product_option() -> None:
    from edgenas.estimators.proxies.grasp import grasp

    space = get_space("mbv3-tiny")
    arch = small_arch(space)
    scores = {}
    for hvp in ("exact", "frozen"):
        ctx = EvalContext(space=space, data_spec="synthetic", options={"proxy_batch": 8, "grasp_hvp": hvp})
        est = make_estimator("proxy:grasp", ctx)
        assert f"Hessian-vector product {hvp}" in est.describe()
        scores[hvp] = est(arch)
        model = space.build(arch, ctx.data.num_classes, ctx.data.in_channels, ctx.seed)
        assert scores[hvp] == grasp(model, ctx.data.batch(8, ctx.seed, resolution=16), ctx.seed, hvp=hvp)
    assert scores["exact"] != scores["frozen"]


def test_bad_estimator_specs() -> None:
    ctx = EvalContext(space=get_space("mbv3-tiny"), data_spec="synthetic", options={"proxy_batch": 1})
    with pytest.raises(EdgenasError, match="unknown proxy 'zenn'.*did you mean 'zen'"):
        make_estimator("proxy:zenn", ctx)
    with pytest.raises(EdgenasError, match="at least 2"):
        make_estimator("proxy:naswot", ctx)


# ------------------------------------------------------------------------------------------------ study
def test_correlation_counts_nonfinite_and_ranks_them_last() -> None:
    acc = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert correlation([1, 2, 3, 4, 5], acc)["spearman"] == pytest.approx(1.0)
    fig = correlation([float("nan"), 2, 3, 4, 5], acc)
    assert fig["nonfinite"] == 1 and fig["spearman"] == pytest.approx(1.0)
    assert correlation([5, 4, 3, 2, float("inf")], acc)["spearman"] == pytest.approx(-1.0)


def test_sample_archs_is_seeded_and_distinct() -> None:
    space = get_space("mbv3-tiny")
    a, b = sample_archs(space, 5, 1), sample_archs(space, 5, 1)
    assert a == b and len({space.key(x) for x in a}) == 5
    assert sample_archs(space, 3, 1) == a[:3]


def counting_trainer() -> tuple[list[int], Callable[[dict], float]]:
    """A stand-in for training: accuracy = the number of blocks (so #params correlates), calls counted."""
    calls: list[int] = []

    def fake_train(arch: dict) -> float:
        calls.append(1)
        return float(sum(arch[f"s{i}.depth"] for i in range(1, 6)))

    return calls, fake_train


def test_study_trains_scores_and_resumes(tmp_path: Path) -> None:
    settings = StudySettings(space="mbv3-tiny", data="synthetic", archs=3, batch=8,
                             proxies=("params", "naswot"), ensemble=("params", "naswot"), accuracy="train",
                             time_every=2)
    calls, fake_train = counting_trainer()

    result = run_study(settings, tmp_path, train_fn=fake_train)
    assert len(result.records) == 3 and len(calls) == 3
    assert set(result.figures) >= {"params", "naswot", "ensemble", "_timing"}
    data = json.loads((tmp_path / "study.json").read_text())
    assert data["settings"]["archs"] == 3 and len(data["records"]) == 3
    assert (tmp_path / "plots" / "params.png").stat().st_size > 1000
    assert "naswot" in result.records[0].seconds  # arch 0 was also timed proxy by proxy
    again = run_study(settings, tmp_path, train_fn=fake_train)
    assert len(calls) == 3  # resumed from the checkpoint: nothing re-trained
    assert [r.scores for r in again.records] == [r.scores for r in result.records]
    other = StudySettings(**{**settings.__dict__, "batch": 16})
    with pytest.raises(EdgenasError, match="other settings"):
        run_study(other, tmp_path, train_fn=fake_train)


def test_grasp_frozen_study_and_a_study_from_before_the_setting(tmp_path: Path) -> None:
    settings = StudySettings(space="mbv3-tiny", data="synthetic", archs=3, batch=8,
                             proxies=("grasp", "fisher", "jacob_cov"), accuracy="train", time_every=1,
                             grasp_hvp="frozen")
    _, fake_train = counting_trainer()
    frozen = run_study(settings, tmp_path / "frozen", train_fn=fake_train)  # shared vs standalone checked
    exact = run_study(StudySettings(**{**settings.__dict__, "grasp_hvp": "exact"}), tmp_path / "exact",
                      train_fn=fake_train)
    f, e = frozen.scores("grasp"), exact.scores("grasp")
    assert np.all(np.isfinite(f)) and not np.array_equal(f, e)
    assert np.allclose(frozen.scores("fisher"), exact.scores("fisher"), rtol=2e-2)
    # a checkpoint written before grasp_hvp existed holds exact scores: it resumes as exact, not as frozen
    checkpoint = tmp_path / "exact" / "checkpoint.jsonl"
    lines = checkpoint.read_text().splitlines()
    header = json.loads(lines[0])
    del header["settings"]["grasp_hvp"]
    checkpoint.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    calls, fake_train = counting_trainer()
    again = run_study(StudySettings(**{**settings.__dict__, "grasp_hvp": "exact"}), tmp_path / "exact",
                      train_fn=fake_train)
    assert calls == [] and np.array_equal(again.scores("grasp"), e)
    with pytest.raises(EdgenasError, match="other settings"):
        run_study(settings, tmp_path / "exact", train_fn=fake_train)


def test_time_limit_reports_what_was_scored_and_resumes(tmp_path: Path) -> None:
    settings = StudySettings(space="mbv3-tiny", data="synthetic", archs=5, batch=8, proxies=("params",),
                             ensemble=(), accuracy="train", time_every=0)
    calls, fake_train = counting_trainer()

    with pytest.raises(EdgenasError, match="after 0 architectures"):
        run_study(settings, tmp_path, train_fn=fake_train, time_limit=0)
    full = run_study(StudySettings(**{**settings.__dict__}), tmp_path / "full", train_fn=fake_train)
    # a checkpoint holding the first 3 architectures, then a study whose time is already up
    lines = (tmp_path / "full" / "checkpoint.jsonl").read_text().splitlines()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint.jsonl").write_text("\n".join(lines[:4]) + "\n")
    calls.clear()
    partial = run_study(settings, tmp_path / "cut", train_fn=fake_train, time_limit=0)
    assert calls == [] and len(partial.records) == 3
    assert partial.figures["_partial"] == {"scored": 3, "asked": 5}
    resumed = run_study(settings, tmp_path / "cut", train_fn=fake_train)
    assert len(calls) == 2 and "_partial" not in resumed.figures
    assert [r.scores for r in resumed.records] == [r.scores for r in full.records]


def test_shards_split_the_study_and_a_final_run_gathers_them(tmp_path: Path) -> None:
    settings = StudySettings(space="mbv3-tiny", data="synthetic", archs=5, batch=8, proxies=("params",),
                             ensemble=(), accuracy="train", time_every=0)
    trained, fake_train = counting_trainer()

    first = run_study(settings, tmp_path, train_fn=fake_train, shard=(0, 2))
    assert [r.index for r in first.records] == [0, 2, 4]
    second = run_study(settings, tmp_path, train_fn=fake_train, shard=(1, 2))
    assert [r.index for r in second.records] == [0, 1, 2, 3, 4] and len(trained) == 5
    gathered = run_study(settings, tmp_path, train_fn=fake_train)
    assert len(trained) == 5 and "_partial" not in gathered.figures
    whole = run_study(settings, tmp_path / "whole", train_fn=fake_train)
    assert [r.scores for r in gathered.records] == [r.scores for r in whole.records]
    with pytest.raises(EdgenasError, match="shard 2/2"):
        run_study(settings, tmp_path, train_fn=fake_train, shard=(2, 2))
    with pytest.raises(EdgenasError, match="leave out --shard"):
        run_study(settings, tmp_path, shard=(0, 2), workers=2)
    with pytest.raises(EdgenasError, match="custom train_fn runs in this process only"):
        run_study(settings, tmp_path, train_fn=fake_train, workers=2)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'edgenas[ray]')")
def test_study_on_ray_workers_scores_what_one_process_scores(tmp_path: Path) -> None:
    """Two Ray tasks score the shards of one checkpoint; the gathered study equals a one-process run."""
    code = (
        "import json;"
        "from edgenas.estimators.proxies.study import StudySettings, run_study;"
        "s = StudySettings(space='tests.micro_space:micro_space', data='synthetic', archs=6, batch=8,"
        " proxies=('params', 'synflow'), ensemble=(), accuracy='train', epochs=1, max_train=64, time_every=0);"
        "seen = [];"
        "r = run_study(s, 'study', workers=2, progress=lambda done, total, key: seen.append(done));"
        "print(json.dumps([[x.index, x.scores, x.accuracy] for x in r.records] + [max(seen)]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *rows, progressed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r[0] for r in rows] == list(range(6)) and progressed == 6
    settings = StudySettings(space="tests.micro_space:micro_space", data="synthetic", archs=6, batch=8,
                             proxies=("params", "synflow"), ensemble=(), accuracy="train", epochs=1, max_train=64,
                             time_every=0)
    serial = run_study(settings, tmp_path / "serial")
    assert [[r.index, r.scores, r.accuracy] for r in serial.records] == rows


# ---------------------------------------------------------------------------------------------- command
def test_correlate_command_on_mbv3_tiny(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = CliRunner().invoke(app, [
        "proxies", "correlate", "--space", "mbv3-tiny", "--data", "synthetic", "--archs", "3", "--batch", "8",
        "--proxies", "params,synflow", "--ensemble", "synflow+params", "--epochs", "1", "--max-train", "64",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "Spearman" in result.output and "ensemble" in result.output
    data = json.loads((out / "study.json").read_text())
    assert all(np.isfinite(r["accuracy"]) for r in data["records"])
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["ensemble.png", "params.png", "synflow.png"]


@pytest.mark.parametrize("args, message", [
    (["--proxies", "synflw"], "unknown proxy 'synflw'"),
    (["--data", "npz:{bad}"], "is not a valid .npz file"),
    (["--archs", "2"], "at least 3 architectures"),
    (["--shard", "1of2"], "--shard takes K/N"),
    (["--shard", "3/2"], "shard 3/2 is not one of"),
    (["--grasp-hvp", "fast"], "unknown --grasp-hvp 'fast'"),
    (["--proxies", "params,naswot,grad_norm", "--batch", "1"], "'naswot' needs a batch of at least 2 inputs, got 1"),
])
def test_correlate_command_bad_input_exits_2(tmp_path: Path, args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip file")
    args = [a.replace("{bad}", str(bad)) for a in args]
    base = ["proxies", "correlate", "--space", "mbv3-tiny", "--data", "synthetic", "--archs", "3",
            "--proxies", "params", "--ensemble", "none", "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", ["edgenas", *base, *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@needs_data
def test_correlate_on_nb201_uses_the_table(tmp_path: Path) -> None:
    data = shared_data()
    settings = StudySettings(space="nb201", data=f"npz:{data}/cifar10", archs=4, batch=8,
                             proxies=("params", "synflow"), ensemble=())
    result = run_study(settings, tmp_path, bench_data=data)
    acc = result.accuracies
    assert np.all((acc > 5) & (acc < 95))
    # NB201's #params is a decent ranker; the table's accuracy must be the one looked up by arch string
    from edgenas.benchmarks.nb201_table import load_nb201

    space = get_space("nb201")
    table = load_nb201(data).accuracy_of("cifar10")
    assert acc[0] == table[space.code(result.records[0].arch)]
