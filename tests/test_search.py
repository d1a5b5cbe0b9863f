from __future__ import annotations

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.search import TrialResult, make_strategy
from edgenas.search.pareto import hypervolume_2d, pareto_mask
from edgenas.spaces import get_space


def synthetic_score(space, arch) -> float:
    """A needle-ish objective: every active block wants kernel 5 and expand 4, stages want depth 3."""
    arch = space.validate(arch)
    score = -abs(space.resolution(arch) - 24) / 4
    for stage in space.blocks(arch):
        score -= abs(len(stage) - 3)
        score -= sum((k != 5) + (e != 4) for k, e in stage)
    return float(score)


def run(strategy, space, budget, feasible=lambda a: True):
    best, seen = -np.inf, []
    for _ in range(budget):
        arch = strategy.ask()
        ok = feasible(arch)
        value = synthetic_score(space, arch)
        strategy.tell(arch, TrialResult({"accuracy": value if ok else np.nan, "cost": -value}, ok))
        seen.append((arch, ok))
        if ok:
            best = max(best, value)
    return best, seen


def test_regularized_evolution_beats_random_on_synthetic_objective():
    space = get_space("mbv3-tiny")
    evo = [run(make_strategy("evolution", space, seed=s, population_size=20, sample_size=5), space, 300)[0]
           for s in range(5)]
    rnd = [run(make_strategy("random", space, seed=s), space, 300)[0] for s in range(5)]
    assert np.mean(evo) > np.mean(rnd) + 3


def test_infeasible_archs_are_never_parents():
    space = get_space("mbv3-tiny")
    strategy = make_strategy("evolution", space, seed=0, population_size=8, sample_size=4)

    def feasible(a):  # only resolution 16 is allowed
        return a["resolution"] == 16

    parents_seen = []
    original = space.mutate

    def spy(arch, rng, prob=None):
        parents_seen.append(arch)
        return original(arch, rng, prob)

    space.mutate = spy
    run(strategy, space, 120, feasible)
    assert parents_seen, "evolution never mutated"
    assert all(feasible(p) for p in parents_seen)


def test_feasibility_filter_is_bounded():
    space = get_space("mbv3-tiny")
    calls = []

    def never(arch):
        calls.append(1)
        return False

    strategy = make_strategy("random", space, seed=0, feasible=never, max_tries=25)
    arch = strategy.ask()  # returns after max_tries instead of looping forever
    assert space.validate(arch) == arch and len(calls) == 25


def test_feasibility_filter_steers_candidates():
    space = get_space("mbv3-tiny")
    strategy = make_strategy("evolution", space, seed=1, feasible=lambda a: a["resolution"] <= 20)
    best, seen = run(strategy, space, 60, lambda a: a["resolution"] <= 20)
    assert all(ok for _, ok in seen)


def test_grid_visits_every_arch_once(micro):
    strategy = make_strategy("grid", micro, seed=0)
    keys = []
    while not strategy.exhausted:
        a = strategy.ask()
        keys.append(micro.key(a))
        strategy.tell(a, TrialResult({"accuracy": 0.0}))
    assert len(keys) == len(set(keys)) == micro.size()
    with pytest.raises(EdgenasError, match="visited all"):
        strategy.ask()


def test_grid_refuses_huge_spaces():
    with pytest.raises(EdgenasError, match="grid search needs a space of at most"):
        make_strategy("grid", get_space("mbv3-tiny"))


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_optuna_strategies_speak_ask_tell(name):
    space = get_space("mbv3-tiny")
    objectives = [("accuracy", "maximize"), ("cost", "minimize")] if name == "nsga2" else [("accuracy", "maximize")]
    strategy = make_strategy(name, space, seed=0, objectives=objectives)
    best, seen = run(strategy, space, 40)
    assert len(seen) == 40 and np.isfinite(best)
    assert all(space.validate(a) == a for a, _ in seen)


def test_replay_rebuilds_evolution_state():
    space = get_space("mbv3-tiny")
    a = make_strategy("evolution", space, seed=3, population_size=10, sample_size=3)
    _, history = run(a, space, 30)
    b = make_strategy("evolution", space, seed=3, population_size=10, sample_size=3)
    for arch, ok in history:
        b.tell(arch, TrialResult({"accuracy": synthetic_score(space, arch)}, ok))
    b.n_asked = a.n_asked
    assert [a.ask() for _ in range(5)] == [b.ask() for _ in range(5)]


def test_unknown_strategy():
    with pytest.raises(EdgenasError, match="did you mean 'random'"):
        make_strategy("randm", get_space("mbv3-tiny"))


def test_pareto_mask_and_hypervolume():
    pts = np.array([[90.0, 5.0], [85.0, 2.0], [80.0, 3.0], [95.0, 9.0], [85.0, 2.0]])
    mask = pareto_mask(pts, ["maximize", "minimize"])
    assert mask.tolist() == [True, True, False, True, True]
    # accuracy up, latency down; reference (accuracy 0, latency 10)
    hv = hypervolume_2d(pts, [0.0, 10.0], ["maximize", "minimize"])
    assert hv == pytest.approx(85 * 8 + (90 - 85) * 5 + (95 - 90) * 1)
