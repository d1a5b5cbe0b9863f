"""The NB201 strategy benchmark: API, CLI and bad input (needs the reference data; skips without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgenas.benchmarks.nb201 import (
    BenchSettings,
    format_table,
    resolve_latency,
    run_benchmark,
    true_front_hypervolume,
)
from edgenas.benchmarks.nb201_table import load_nb201
from edgenas.errors import ConstraintUnsatisfiable, EdgenasError
from edgenas.search import STRATEGIES
from edgenas.search.base import Strategy
from edgenas.search.pareto import hypervolume_2d, pareto_mask
from edgenas.spaces.nb201 import nb201_space

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data() -> str:
    base = Path(os.environ.get("EDGENAS_DATA") or REPO.parent / "shared" / "data")
    if not (base / "nb201" / "nb201_accuracy.csv").is_file():
        pytest.skip(f"NB201 reference data not found under {base} (set EDGENAS_DATA)")
    return str(base)


def test_small_unconstrained_run(data: str) -> None:
    settings = BenchSettings(strategies=["random", "evolution", "reinforce", "bo"], budget=30, seeds=2,
                             checkpoints=(10,))
    summary = run_benchmark(settings, data)
    assert summary["optimum"] == pytest.approx(94.3733)
    assert "test accuracy" in summary["oracle"]
    for r in summary["strategies"].values():
        curve = np.array(r["curve_mean"])
        assert len(curve) == 30 and np.all(np.diff(curve) >= 0)
        assert r["queries_used_mean"] == 30
        assert r["regret_mean"] >= 0 and 0 <= r["found_optimum"] <= 1
        assert r["at"]["10"]["best_mean"] <= r["best_mean"]
    text = format_table(summary)
    assert "evolution" in text and "regret median" in text
    json.dumps(summary)  # JSON-ready


@dataclass
class Stubborn(Strategy):
    """Always proposes the same architecture (tests that repeats are free and runs still end)."""

    name = "stubborn"

    def _propose(self, rng: np.random.Generator) -> dict:
        return nb201_space().from_code(1234)


def test_repeated_architectures_cost_no_query(data: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STRATEGIES, "stubborn", Stubborn)
    summary = run_benchmark(BenchSettings(strategies=["stubborn"], budget=10, seeds=1, max_asks_factor=3), data)
    r = summary["strategies"]["stubborn"]
    assert r["queries_used_mean"] == 1 and r["asks_mean"] == 30
    table = load_nb201(data)
    assert r["best_mean"] == pytest.approx(table.accuracy_of("cifar10")[1234])


def test_constrained_run_queries_only_feasible_archs(data: str) -> None:
    table = load_nb201(data)
    latency = table.latency_of("raspi4")
    limit = resolve_latency(table, "raspi4", "median")
    assert limit == pytest.approx(np.median(latency))
    settings = BenchSettings(strategies=["random", "bo"], budget=20, seeds=2, device="raspi4", latency_ms=limit)
    summary = run_benchmark(settings, data)
    acc = table.accuracy_of("cifar10")
    assert summary["optimum"] == pytest.approx(acc[latency <= limit].max())
    assert summary["optimum_kind"] == "constrained"
    for r in summary["strategies"].values():
        assert r["best_mean"] <= summary["optimum"]
        assert r["queries_used_mean"] == 20


def test_multi_objective_hypervolume(data: str) -> None:
    table = load_nb201(data)
    acc, lat = table.accuracy_of("cifar10"), table.latency_of("raspi4")
    hv, ref = true_front_hypervolume(acc, lat)
    assert hv > 0 and ref[1] == pytest.approx(lat[np.argmax(acc)])  # the front's slowest point is its best
    subset = np.random.default_rng(0).choice(len(acc), 3000, replace=False)
    points = np.stack([acc, lat], 1)
    assert hypervolume_2d(points[subset], ref, ["maximize", "minimize"]) < hv
    front = pareto_mask(points[subset], ["maximize", "minimize"])
    assert hypervolume_2d(points[subset][front], ref, ["maximize", "minimize"]) == pytest.approx(
        hypervolume_2d(points[subset], ref, ["maximize", "minimize"]))
    settings = BenchSettings(strategies=["nsga2"], budget=30, seeds=1, device="raspi4",
                             objectives=("accuracy", "latency"))
    r = run_benchmark(settings, data)["strategies"]["nsga2"]
    assert 0 < r["hypervolume_ratio_mean"] <= 1


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (BenchSettings(device="raspi4", latency_ms=0.001), "below every architecture's latency (fastest: 0.01128"),
        (BenchSettings(device="rasp4"), "valid: 1080ti_1, eyeriss, fpga, gold_6226, pixel3, raspi4, titan_rtx_1"),
        (BenchSettings(strategies=["reinforc"]), "did you mean 'reinforce'"),
        (BenchSettings(latency_ms=20.0), "needs a device"),
        (BenchSettings(objectives=("accuracy", "params")), "objectives must be"),
        (BenchSettings(dataset="svhn"), "valid: cifar10, cifar100, imagenet16_120"),
        (BenchSettings(budget=0), "at least 1"),
    ],
)
def test_bad_settings(data: str, settings: BenchSettings, fragment: str) -> None:
    with pytest.raises(EdgenasError) as err:
        run_benchmark(settings, data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unsatisfiable_is_its_own_error(data: str) -> None:
    with pytest.raises(ConstraintUnsatisfiable):
        run_benchmark(BenchSettings(device="fpga", latency_ms=0.5), data)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edgenas", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_tiny_budget(data: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _cli("bench", "nb201", "--strategies", "random,evolution", "--budget", "12", "--seeds", "2",
                "--device", "pixel3", "--latency-ms", "median", "--bench-data", data, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "evolution" in proc.stdout and "constrained optimum" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["settings"]["budget"] == 12 and "machine" in summary and summary["command"]
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_bad_input_exits_2(data: str, tmp_path: Path) -> None:
    proc = _cli("bench", "nb201", "--device", "raspi4", "--latency-ms", "0.001", "--bench-data", data,
                "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("edgenas: error: latency constraint 0.001 ms")
    assert not (tmp_path / "x.json").exists()
    proc = _cli("bench", "nb201", "--latency-ms", "fast", "--device", "raspi4", "--bench-data", data)
    assert proc.returncode == 2 and "a number of ms or 'median'" in proc.stderr


def test_cli_without_data_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGENAS_DATA"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "edgenas", "bench", "nb201", "--budget", "5"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--bench-data PATH or set EDGENAS_DATA" in proc.stderr
