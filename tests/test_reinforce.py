"""The REINFORCE controller and the Thompson-sampling BO strategy (synthetic objectives, no data)."""

from __future__ import annotations

import numpy as np
import pytest

from edgenas.search import STRATEGIES, TrialResult, make_strategy
from edgenas.search.bayes import ThompsonBayes
from edgenas.search.reinforce import ReinforceController
from edgenas.spaces import get_space


def conv_count(arch: dict) -> float:
    """A synthetic objective on NB201: the number of 3x3 conv edges, plus a little for 1x1 ones."""
    return sum((v == "nor_conv_3x3") + 0.3 * (v == "nor_conv_1x1") for v in arch.values())


def run(strategy, objective, n: int) -> list[float]:  # noqa: ANN001
    rewards = []
    for _ in range(n):
        arch = strategy.ask()
        value = objective(arch)
        rewards.append(value)
        strategy.tell(arch, TrialResult({"accuracy": value}))
    return rewards


def test_registered() -> None:
    assert STRATEGIES["reinforce"] is ReinforceController and STRATEGIES["bo"] is ThompsonBayes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_learns_a_synthetic_objective(seed: int) -> None:
    space = get_space("nb201")
    strategy = make_strategy("reinforce", space, seed=seed, learning_rate=0.01)
    rewards = run(strategy, conv_count, 150)
    assert np.mean(rewards[-30:]) > np.mean(rewards[:30]) + 1.5
    probs = strategy.probabilities({n: "nor_conv_3x3" for n in space.names})
    assert sum(p[3] > 0.5 for p in probs.values()) >= 5  # 3x3 is now the likeliest op on (nearly) every edge


def test_reinforce_resumes_by_replay() -> None:
    space = get_space("nb201")
    first = ReinforceController(space=space, seed=5, batch_size=3)
    history = []
    for _ in range(40):
        arch = first.ask()
        result = TrialResult({"accuracy": conv_count(arch)})
        first.tell(arch, result)
        history.append((arch, result))
    replayed = ReinforceController(space=space, seed=5, batch_size=3)
    for arch, result in history:
        replayed.tell(arch, result)
    replayed.n_asked = len(history)  # as the experiment does after a replay
    assert np.array_equal(first._policy.flat, replayed._policy.flat)
    assert first.baseline == replayed.baseline
    assert [first.ask() for _ in range(5)] == [replayed.ask() for _ in range(5)]


def test_reinforce_respects_inactive_dimensions() -> None:
    space = get_space("mbv3-tiny")
    strategy = ReinforceController(space=space, seed=0, batch_size=4)
    archs = run(strategy, lambda a: float(a["resolution"]), 12)  # exercises batched updates on mixed depths
    assert len(archs) == 12
    for _ in range(10):
        arch = strategy.ask()
        assert space.validate(arch) == arch  # inactive blocks hold the canonical choice
        probs = strategy.probabilities(arch)
        assert set(probs) == set(space.active_names(arch))


def test_reinforce_gradient_matches_finite_differences() -> None:
    space = get_space("nb201")
    strategy = ReinforceController(space=space, seed=1, hidden_size=5, init_scale=0.5, entropy_weight=0.3,
                                   temperature=1.3)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(4)]
    adv = rng.normal(size=4)
    policy = strategy._policy
    names, idx = policy.decisions(archs)
    grad = np.zeros_like(policy.flat)
    policy.accumulate_grad(names, idx, adv, 0.3, 1.3, 4, policy.views(grad))
    for j in rng.choice(policy.flat.size, size=40, replace=False):
        old = policy.flat[j]
        policy.flat[j] = old + 1e-6
        up = strategy.loss(archs, adv)
        policy.flat[j] = old - 1e-6
        down = strategy.loss(archs, adv)
        policy.flat[j] = old
        assert (up - down) / 2e-6 == pytest.approx(grad[j], abs=1e-6)


def test_reinforce_mnasnet_reward() -> None:
    space = get_space("nb201")
    strategy = ReinforceController(space=space, latency_target=10.0, latency_weights=(0.0, -1.0))
    assert strategy.reward(TrialResult({"accuracy": 90.0, "latency": 5.0})) == pytest.approx(90.0)
    assert strategy.reward(TrialResult({"accuracy": 90.0, "latency": 20.0})) == pytest.approx(45.0)
    soft = ReinforceController(space=space, latency_target=10.0)
    assert soft.reward(TrialResult({"accuracy": 90.0, "latency": 20.0})) == pytest.approx(90 * 2**-0.07)
    assert strategy.reward(TrialResult({"latency": 5.0}, feasible=False)) is None  # nothing seen yet


def test_reinforce_skips_told_architectures() -> None:
    space = get_space("nb201")

    def distinct(skip_seen: int) -> int:
        strategy = ReinforceController(space=space, seed=0, learning_rate=0.02, skip_seen=skip_seen)
        keys = set()
        for _ in range(100):
            arch = strategy.ask()
            keys.add(space.key(arch))
            strategy.tell(arch, TrialResult({"accuracy": conv_count(arch)}))
        return len(keys)

    assert distinct(20) > distinct(0) + 10


def test_bo_finds_the_synthetic_optimum_and_never_repeats() -> None:
    space = get_space("nb201")
    strategy = make_strategy("bo", space, seed=0)
    seen = set()
    best = 0.0
    for _ in range(80):  # the optimum is 1 of 15,625 architectures
        arch = strategy.ask()
        key = space.key(arch)
        assert key not in seen
        seen.add(key)
        best = max(best, conv_count(arch))
        strategy.tell(arch, TrialResult({"accuracy": conv_count(arch)}))
    assert best == 6.0


def test_bo_respects_the_feasible_predicate_and_replays() -> None:
    space = get_space("nb201")

    def feasible(arch: dict) -> bool:
        return sum(v == "nor_conv_3x3" for v in arch.values()) <= 3

    first = ThompsonBayes(space=space, seed=3, feasible=feasible)
    history = []
    for _ in range(25):
        arch = first.ask()
        assert feasible(arch)
        result = TrialResult({"accuracy": conv_count(arch)})
        first.tell(arch, result)
        history.append((arch, result))
    assert max(conv_count(a) for a, _ in history) >= 3.3  # the feasible best is 3.9 (3 + 3 x 0.3)
    again = ThompsonBayes(space=space, seed=3, feasible=feasible)
    for arch, result in history:
        again.tell(arch, result)
    again.n_asked = first.n_asked
    assert [first.ask() for _ in range(3)] == [again.ask() for _ in range(3)]


def test_bo_mutation_pool_on_a_large_space() -> None:
    space = get_space("mbv3-tiny")
    strategy = ThompsonBayes(space=space, seed=0, n_init=5, pool_size=60)
    rewards = run(strategy, lambda a: float(a["resolution"]) + a["s1.depth"], 20)
    assert max(rewards) == 36.0  # resolution 32, depth 4
    assert np.mean(rewards[-8:]) > np.mean(rewards[:5]) + 3.0
