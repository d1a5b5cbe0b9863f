"""EAS-style growth strategy: one-step children of good parents, a policy that learns what to grow."""

from __future__ import annotations

import pytest

from edgenas.errors import EdgenasError
from edgenas.experiment import run_search
from edgenas.search import TrialResult, make_strategy
from edgenas.spaces import get_space

from .test_experiment import MICRO
from .test_experiment import config as micro_config


def _steps(space, strategy, child, parent):
    return strategy._steps(space.validate(child), space.validate(parent))


def _run(strategy, reward, n):
    archs = []
    for _ in range(n):
        arch = strategy.ask()
        strategy.tell(arch, TrialResult({"accuracy": reward(arch)}))
        archs.append(arch)
    return archs


def test_it_starts_small_and_proposes_one_step_children_of_told_architectures():
    space = get_space("mbv3-tiny")
    strategy = make_strategy("eas", space, seed=0)
    archs = _run(strategy, lambda a: float(len(space.blocks(a)[0])), 12)
    assert archs[0] == space.validate(space.extreme(smallest=True))
    keys = [space.key(a) for a in archs]
    assert len(set(keys)) == len(keys)
    for i, arch in enumerate(archs[1:], start=1):  # each grows some earlier one by one step in some dimensions
        assert any(_steps(space, strategy, arch, parent) for parent in archs[:i])


def test_the_policy_learns_to_grow_the_dimension_that_pays():
    space = get_space("mbv3-tiny")
    strategy = make_strategy("eas", space, seed=1)
    start = strategy.probability("s2.depth")
    _run(strategy, lambda a: 50.0 + 10.0 * a["s2.depth"], 40)  # only stage 2's depth matters
    others = [strategy.probability(d) for d in strategy.theta if d != "s2.depth" and d.endswith(".depth")]
    assert strategy.probability("s2.depth") > start
    assert strategy.probability("s2.depth") > max(others)


def test_replaying_the_told_trials_rebuilds_the_same_policy():
    space = get_space("mbv3-tiny")
    first = make_strategy("eas", space, seed=2)
    archs = _run(first, lambda a: float(a["s1.b1.kernel"] + a["s3.depth"]), 15)
    replay = make_strategy("eas", space, seed=2)
    for arch in archs:
        replay.tell(arch, TrialResult({"accuracy": float(arch["s1.b1.kernel"] + arch["s3.depth"])}))
    replay.n_asked = first.n_asked
    assert replay.theta == first.theta
    assert replay.ask() == first.ask()


def test_a_space_without_ordered_dimensions_is_a_clear_error():
    with pytest.raises(EdgenasError, match="ordered dimensions"):
        make_strategy("eas", get_space("nb201"))


def test_eas_with_net2net_inheritance_end_to_end(tmp_path):
    result = run_search(micro_config(tmp_path, strategy="eas", estimator="net2net", budget=5))
    space = get_space(MICRO)
    archs = [r.arch for r in result.records]
    assert len({space.key(a) for a in archs}) == 5
    assert archs[0] == space.validate(space.extreme(smallest=True))
    assert all(0.0 <= r.metrics["accuracy"] <= 100.0 for r in result.records)
