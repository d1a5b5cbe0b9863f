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


class FailingExecutor(CountingExecutor):
    """Raises a worker's error at the ``fail_at``-th evaluation (counting from 0) of the search."""

    def __init__(self, evaluator, workers: int, fail_at: int) -> None:
        super().__init__(evaluator, workers)
        self.fail_at, self.done = fail_at, 0

    def map(self, archs):
        for outcome in super().map(archs):
            if self.done == self.fail_at:
                raise EdgenasError("a Ray worker died during an evaluation 3 times")
            self.done += 1
            yield outcome


def test_a_failed_worker_loses_nothing_already_evaluated_and_resume_finishes(tmp_path):
    exp = Experiment(config(tmp_path))
    executor = FailingExecutor(exp.evaluators["accuracy"], workers=3, fail_at=4)
    with pytest.raises(EdgenasError, match="died"):
        exp.run(executor=executor)
    sent = [a for b in executor.batches for a in b]
    resumed = Experiment(config(tmp_path))
    resumed.start(resume=True, executor=CountingExecutor(resumed.evaluators["accuracy"], workers=3))
    result = resumed.run()
    assert [r.arch for r in result.records[:4]] == sent[:4]  # the four evaluated before the failure, in order
    assert len(result.records) == 7 and len({exp.space.key(r.arch) for r in result.records}) == 7


RAY_FAILURES = '''
import json, os
from edgenas.errors import EdgenasError
from edgenas.executors import RayExecutor

class DiesOnce:
    def __init__(self, config, cwd):
        self.marker = os.path.join(cwd, "died")
    def evaluate(self, arch):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return float(arch["x"]), 0.0

class AlwaysDies:
    def __init__(self, config, cwd):
        pass
    def evaluate(self, arch):
        os._exit(1)

class CannotStart:
    def __init__(self, config, cwd):
        raise EdgenasError("data path 'npz:/nowhere' does not exist on this node")
    def evaluate(self, arch):
        return 0.0, 0.0

class BadArch:
    def __init__(self, config, cwd):
        pass
    def evaluate(self, arch):
        raise EdgenasError(f"unknown choice {arch['x']}")

report = {}
for name, cls in [("dies_once", DiesOnce), ("always_dies", AlwaysDies), ("cannot_start", CannotStart),
                  ("bad_arch", BadArch)]:
    with RayExecutor({}, 2, actor_class=cls) as ex:
        try:
            report[name] = [a for a, _ in ex.map([{"x": 1}, {"x": 2}, {"x": 3}])]
        except EdgenasError as exc:
            report[name] = "EdgenasError: " + str(exc)
print(json.dumps(report))
'''


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'edgenas[ray]')")
def test_ray_workers_restart_after_a_crash_and_fail_with_one_line_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", RAY_FAILURES], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["dies_once"] == [1.0, 2.0, 3.0]  # the crashed worker was restarted and its evaluation rerun
    assert report["always_dies"].startswith("EdgenasError: a Ray worker died during an evaluation 3 times")
    assert "--resume" in report["always_dies"]
    assert report["cannot_start"] == ("EdgenasError: a Ray worker could not start: data path 'npz:/nowhere' does "
                                      "not exist on this node; the results stored so far are kept: fix that and "
                                      "rerun with --resume")
    assert report["bad_arch"] == "EdgenasError: unknown choice 1"
