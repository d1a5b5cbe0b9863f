"""HAT's latency-constrained evolutionary search over SubTransformers.

Wang et al., "HAT" (ACL 2020), section 3.3: a population of SubTransformers that meet the hardware latency
constraint (judged by a latency predictor trained on measurements of the device, since measuring every
candidate would be slow); each iteration keeps the ``parents`` with the lowest validation loss under the
SuperTransformer's weights, and refills the population with ``mutations`` (each gene resampled with
probability ``mutate_prob``) and ``crossovers`` (each gene from one of two parents). A child that breaks
the constraint is proposed again; after ``max_tries`` proposals a parent is copied instead, so the search
never loops on a tight budget. HAT used a population of 125 (25 parents, 50 mutations, 50 crossovers)
for 30 iterations; the defaults here are smaller for a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.spaces.base import Arch, SearchSpace

Scores = Callable[[Sequence[Arch]], np.ndarray]


@dataclass
class HATSearchConfig:
    """Evolution settings (HAT's: population 125 = 25 parents + 50 mutations + 50 crossovers, 30 iterations,
    mutation probability 0.3)."""

    parents: int = 10
    mutations: int = 20
    crossovers: int = 20
    generations: int = 10
    mutate_prob: float = 0.3
    max_tries: int = 50
    seed: int = 0

    @property
    def population(self) -> int:
        return self.parents + self.mutations + self.crossovers

    def __post_init__(self) -> None:
        if min(self.parents, self.generations, self.max_tries) < 1 or min(self.mutations, self.crossovers) < 0:
            raise EdgenasError("parents, generations and max_tries must be at least 1, mutations and crossovers "
                               "at least 0")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise EdgenasError(f"mutate_prob {self.mutate_prob} is not a probability in [0, 1]")


@dataclass
class HATSearchResult:
    arch: Arch
    score: float
    latency: float
    history: list[dict[str, float]] = field(default_factory=list)  # per generation: best score and its latency
    scored: int = 0  # SubTransformers scored with the SuperTransformer (distinct ones)
    proposals: int = 0  # latency predictions, infeasible proposals included
    fallbacks: int = 0  # children replaced by parent copies after max_tries proposals
    seconds: float = 0.0


class BudgetUnreachable(EdgenasError):
    """No SubTransformer meets the latency budget; ``fastest`` is the lowest latency the search saw."""

    def __init__(self, message: str, fastest: float = float("nan")) -> None:
        super().__init__(message)
        self.fastest = fastest


def evolutionary_search(space: SearchSpace, score: Scores, latency: Scores, budget: float,
                        cfg: HATSearchConfig | None = None, target_name: str = "the target") -> HATSearchResult:
    """The SubTransformer with the highest ``score`` whose ``latency`` is within ``budget`` (module docstring).
    ``score`` and ``latency`` map a list of architectures to an array; scores are cached per architecture."""
    cfg = cfg or HATSearchConfig()
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    cache: dict[str, float] = {}
    proposals = fallbacks = 0

    def scored(archs: Sequence[Arch]) -> np.ndarray:
        todo = [a for a in {space.key(a): a for a in archs if space.key(a) not in cache}.values()]
        if todo:
            for a, s in zip(todo, np.asarray(score(todo), dtype=np.float64), strict=True):
                cache[space.key(a)] = float(s)
        return np.array([cache[space.key(a)] for a in archs])

    def feasible(archs: list[Arch]) -> tuple[list[Arch], np.ndarray]:
        nonlocal proposals
        if not archs:
            return [], np.zeros(0)
        lat = np.asarray(latency(archs), dtype=np.float64)
        proposals += len(archs)
        ok = lat <= budget
        return [a for a, k in zip(archs, ok, strict=True) if k], lat[ok]

    # initial population: random SubTransformers within the budget
    smallest = space.canonical(space.extreme(smallest=True))
    small_lat = float(np.asarray(latency([smallest]))[0])
    pop: list[Arch] = []
    pop_lat: list[float] = []
    fastest = small_lat
    for _ in range(cfg.max_tries):
        if len(pop) >= cfg.population:
            break
        batch = [space.canonical(space.sample(rng)) for _ in range(4 * cfg.population)]
        lat = np.asarray(latency(batch), dtype=np.float64)
        proposals += len(batch)
        fastest = min(fastest, float(lat.min()))
        for a, ms in zip(batch, lat, strict=True):
            if ms <= budget and len(pop) < cfg.population:
                pop.append(a)
                pop_lat.append(float(ms))
    if not pop:
        if small_lat > budget:
            raise BudgetUnreachable(f"no SubTransformer meets {budget:g} ms on {target_name}: the fastest reached is "
                                    f"{fastest:.4g} ms (the smallest SubTransformer: {small_lat:.4g} ms); raise the "
                                    "budget", min(fastest, small_lat))
        pop, pop_lat = [smallest], [small_lat]
    history: list[dict[str, float]] = []
    for _ in range(cfg.generations):
        s = scored(pop)
        order = np.argsort(-s, kind="stable")[: cfg.parents]
        parents, p_lat = [pop[i] for i in order], [pop_lat[i] for i in order]
        history.append({"best_score": float(s[order[0]]), "latency": p_lat[0]})
        children: list[Arch] = []
        child_lat: list[float] = []
        for kind, n in (("mutation", cfg.mutations), ("crossover", cfg.crossovers)):
            made: list[Arch] = []
            made_lat: list[float] = []
            for _try in range(cfg.max_tries):
                need = n - len(made)
                if need <= 0:
                    break
                if kind == "mutation":
                    props = [space.canonical(space.mutate(parents[int(rng.integers(len(parents)))], rng,
                                                          cfg.mutate_prob)) for _ in range(need)]
                else:
                    props = [space.canonical(space.crossover(parents[int(rng.integers(len(parents)))],
                                                             parents[int(rng.integers(len(parents)))], rng))
                             for _ in range(need)]
                ok, ok_lat = feasible(props)
                made += ok
                made_lat += ok_lat.tolist()
            while len(made) < n:
                i = int(rng.integers(len(parents)))
                made.append(parents[i])
                made_lat.append(p_lat[i])
                fallbacks += 1
            children += made[:n]
            child_lat += made_lat[:n]
        pop, pop_lat = parents + children, p_lat + child_lat
    s = scored(pop)
    best = int(np.argmax(s))
    history.append({"best_score": float(s[best]), "latency": pop_lat[best]})
    return HATSearchResult(dict(pop[best]), float(s[best]), float(pop_lat[best]), history, len(cache), proposals,
                           fallbacks, time.perf_counter() - t0)


def latency_function(evaluator: Any) -> Scores:
    """``archs -> latencies`` of a target evaluator (vectorised when it has ``evaluate_batch``)."""
    if hasattr(evaluator, "evaluate_batch"):
        return lambda archs: np.asarray(evaluator.evaluate_batch(list(archs)), dtype=np.float64)
    return lambda archs: np.array([float(evaluator(a)) for a in archs])


def describe_arch(arch: Mapping[str, Any], encoder_layers: int) -> str:
    """One line: embed dims, decoder layers, per-layer FFN dims and heads."""
    d = int(arch["decoder_layer_num"])
    enc = " ".join(f"{arch[f'enc{i}.ffn']}/{arch[f'enc{i}.heads']}h" for i in range(1, encoder_layers + 1))
    dec = " ".join(f"{arch[f'dec{j}.ffn']}/{arch[f'dec{j}.heads']}h/x{arch[f'dec{j}.ende_layers']}"
                   for j in range(1, d + 1))
    return f"enc {arch['encoder_embed_dim']}d [{enc}]  dec {arch['decoder_embed_dim']}d x{d} [{dec}]"


@dataclass
class CheckedSearch:
    """A search whose answer was measured on the device; ``rounds`` lists every budget searched with the
    answer's predicted and measured latency."""

    result: HATSearchResult
    measured: float | None
    rounds: list[dict[str, float]] = field(default_factory=list)


def search_and_verify(space: SearchSpace, score: Scores, latency: Scores, budget: float,
                      cfg: HATSearchConfig | None = None, target_name: str = "the target",
                      measure: Callable[[Arch], float] | None = None, max_rounds: int = 3) -> CheckedSearch:
    """:func:`evolutionary_search`, then (with ``measure``) the answer measured on the device; while it breaks
    the budget, search again within ``budget x predicted / measured`` of predicted latency (at most
    ``max_rounds`` searches). An answer chosen at the edge of the budget among many candidates tends to be
    one whose latency the predictor underestimates, so a measurement above a prediction is expected there.
    When no SubTransformer is predicted to meet the tightened budget, the next search uses the fastest
    predicted latency seen instead. The last answer is returned even if it still breaks the budget
    (``measured`` says so)."""
    searched, rounds, last, at_floor = budget, [], None, False
    while True:
        try:
            res = evolutionary_search(space, score, latency, searched, cfg, target_name)
        except BudgetUnreachable as exc:
            if last is None:
                raise
            if at_floor or exc.fastest >= last.result.latency or len(rounds) >= max_rounds:
                return last
            searched, at_floor = exc.fastest, True  # nothing predicted that fast: search at the fastest seen
            continue
        if measure is None:
            return CheckedSearch(res, None, [{"budget_ms": searched, "predicted_ms": res.latency}])
        ms = float(measure(res.arch))
        rounds.append({"budget_ms": searched, "predicted_ms": res.latency, "measured_ms": ms})
        last = CheckedSearch(res, ms, rounds)
        if ms <= budget or len(rounds) >= max_rounds:
            return last
        searched = budget * res.latency / ms  # the budget corrected by this answer's prediction error
