"""Executors: batched accuracy evaluations in a search, in process and on Ray actors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from edgenas.errors import EdgenasError
from edgenas.executors import InProcessExecutor
from edgenas.experiment import Experiment, ExperimentConfig, run_search

from .conftest import REPO
from .test_experiment import MICRO
from .test_experiment import config as micro_config


def config(out, **kw) -> ExperimentConfig:
    """The experiment tests' micro search, with a budget of 7 (two full batches of 3 and a last of 1)."""
    return micro_config(out, **{"budget": 7, **kw})


class CountingExecutor(InProcessExecutor):
    """In-process, ``workers`` at a time, and remembers every batch it was given."""

    def __init__(self, evaluator, workers: int) -> None:
        super().__init__(evaluator, workers)
        self.batches: list[list[dict]] = []

    def map(self, archs):
        self.batches.append([dict(a) for a in archs])
        return super().map(archs)


def test_several_workers_ask_a_batch_then_tell_it_in_order(tmp_path):
    exp = Experiment(config(tmp_path))
    events: list[str] = []
    ask, tell = exp.strategy.ask, exp.strategy.tell
    exp.strategy.ask = lambda: events.append("ask") or ask()
    exp.strategy.tell = lambda arch, result: events.append("tell") or tell(arch, result)
    executor = CountingExecutor(exp.evaluators["accuracy"], workers=3)
    result = exp.run(executor=executor)
    assert [len(b) for b in executor.batches] == [3, 3, 1]  # the last batch only what the budget leaves
    assert "".join(e[0] for e in events) == "aaattt" + "aaattt" + "at"
    assert len(result.records) == 7 and all(r.feasible for r in result.records)
    assert len({exp.space.key(r.arch) for r in result.records}) == 7
    assert [r.arch for r in result.records] == [a for b in executor.batches for a in b]  # stored in ask order
    serial = Experiment(config(tmp_path / "serial")).evaluators["accuracy"]
    for r in result.records[:2]:  # an evaluation does not depend on its batch
        assert r.metrics["accuracy"] == serial(r.arch)


def test_infeasible_candidates_never_reach_the_workers(tmp_path):
    probe = Experiment(config(tmp_path / "probe"))
    space_min = probe.cost_metrics(probe.space.extreme(smallest=True))["params"]
    exp = Experiment(config(tmp_path, strategy="random", constraints={"params": space_min * 1.3}))
    executor = CountingExecutor(exp.evaluators["accuracy"], workers=2)
    result = exp.run(executor=executor)
    sent = [a for b in executor.batches for a in b]
    infeasible = [r for r in result.records if not r.feasible]
    assert infeasible and all("accuracy" not in r.metrics for r in infeasible)
    assert len(sent) == sum(r.feasible for r in result.records) == 7
    assert all(r.metrics["params"] <= space_min * 1.3 for r in result.records if r.feasible)


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(EdgenasError, match="--workers must be a positive"):
        Experiment(config(tmp_path, workers=0))


def test_resume_may_change_the_number_of_workers(tmp_path):
    run_search(config(tmp_path, budget=3))
    exp = Experiment(config(tmp_path, budget=5, workers=2))
    exp.start(resume=True, executor=CountingExecutor(exp.evaluators["accuracy"], workers=2))
    result = exp.run()
    assert len(result.records) == 5 and len({exp.space.key(r.arch) for r in result.records}) == 5


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'edgenas[ray]')")
def test_search_on_ray_workers_matches_in_process_evaluations(tmp_path):
    """Two Ray actors evaluate the search's candidates; each accuracy equals this process's own."""
    code = (  # run from tmp_path with a relative --out: the workers must write the weights where it points
        "import json;"
        "from edgenas.experiment import ExperimentConfig, run_search;"
        f"cfg = ExperimentConfig(out='ray', space={MICRO!r}, data='synthetic', estimator='train',"
        " target=None, strategy='random', budget=4, objectives=['accuracy', 'params'], epochs=1, workers=2);"
        "r = run_search(cfg); print(json.dumps([[x.arch, x.metrics['accuracy']] for x in r.records]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the micro space's module, for the workers too
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 4
    assert len(list((tmp_path / "ray" / "weights").iterdir())) == 4
    serial = Experiment(config(tmp_path / "serial")).evaluators["accuracy"]
    for arch, accuracy in rows:
        assert accuracy == serial(arch)
