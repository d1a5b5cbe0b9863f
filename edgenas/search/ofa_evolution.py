"""Once-for-All's constrained evolutionary finder, vectorised over the whole population.

Cai et al., "Once-for-All" (ICLR 2020), section 3.4: with an accuracy predictor and a latency model the
search for the best subnet under a latency budget costs no training; OFA runs an evolutionary search
(population 100, parent ratio 0.25, mutation ratio 0.5, per-gene mutation probability 0.1, 500
generations): each generation keeps the best quarter as parents and makes 50 mutants and 50 crossovers
of them, every child satisfying the budget.

Here a population is one integer matrix (rows = candidates, columns = the choice indices of
:class:`~edgenas.estimators.accuracy_predictor.GeneCodec`), and every step -- mutation, crossover,
latency, accuracy -- is a numpy operation over all candidates at once. The budget is respected without
endless rejection sampling: children are proposed in over-sized batches, the feasible ones kept, and
after ``max_tries`` rounds the missing children are copies of parents (always feasible). If no sampled
candidate and not the smallest subnet meets the budget, the search stops with a one-line error that
names the fastest latency it reached.

Latency models (:func:`batched_latency`): a layer table (``lut:``, ``note10``) and a latency predictor
(``predictor:``) are evaluated directly on the gene matrix; any other instant evaluator through its
``evaluate_batch``; a measured target (``cpu``) through a surrogate fitted on a few measured subnets
(see :class:`MeasuredSurrogate`), whose answer :mod:`edgenas.supernets.specialize` then verifies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.estimators.accuracy_predictor import GeneCodec

GeneFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvolutionConfig:
    """OFA's finder settings."""

    population: int = 100
    generations: int = 500
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    max_tries: int = 20
    oversample: float = 2.0
    seed: int = 0


@dataclass
class EvolutionResult:
    genes: np.ndarray
    accuracy: float
    latency: float
    seconds: float
    candidates: int  # children scored (accuracy + latency), the unit of OFA's "candidates per second"
    proposals: int  # every proposal whose latency was predicted, infeasible ones included
    fallbacks: int  # children replaced by parent copies after max_tries rounds
    history: list[float] = field(default_factory=list)  # best predicted accuracy per generation
    cpu_seconds: float = 0.0  # this process's CPU time (wall time counts other jobs on a shared machine)

    @property
    def candidates_per_second(self) -> float:
        return self.candidates / max(self.seconds, 1e-12)


class BudgetUnreachable(EdgenasError):
    """No subnet found meets the latency budget."""


class GenePool:
    """Uniform draws of gene rows over each gene's *allowed* choice indices (a latency table may cover only
    some resolutions or widths), vectorised through a padded ``(G, max choices)`` table."""

    def __init__(self, codec: GeneCodec, allowed: dict[str, list[int]] | None = None) -> None:
        allowed = allowed or {}
        self.codec = codec
        sets = [sorted(allowed.get(n, range(len(c)))) for n, c in zip(codec.names, codec.choices, strict=True)]
        for n, st in zip(codec.names, sets, strict=True):
            if not st:
                raise EdgenasError(f"no allowed choice left for {n}")
        self.lengths = np.array([len(st) for st in sets], dtype=np.int64)
        self.table = np.zeros((codec.G, int(self.lengths.max())), dtype=np.int64)
        for g, st in enumerate(sets):
            self.table[g, : len(st)] = st
        self.cols = np.arange(codec.G)

    def random(self, n: int, rng: np.random.Generator, shrink: float = 1.0) -> np.ndarray:
        """``n`` random rows; ``shrink`` < 1 draws positions from the lower part of each allowed list."""
        return self.from_uniform(rng.random((n, self.codec.G)) * shrink)

    def from_uniform(self, u: np.ndarray) -> np.ndarray:
        """Rows from uniform numbers in [0, 1) (one per gene)."""
        return self.table[self.cols[None, :], (u * self.lengths).astype(np.int64)]

    def smallest(self) -> np.ndarray:
        return self.table[:, 0].copy()


def evolve(codec: GeneCodec, acc_fn: GeneFn, lat_fn: GeneFn, budget: float,
           config: EvolutionConfig | None = None, target_name: str = "the target",
           allowed: dict[str, list[int]] | None = None) -> EvolutionResult:
    """The most accurate subnet (by ``acc_fn``) with ``lat_fn <= budget``; see the module docstring.
    ``allowed`` restricts dimensions (by name) to some choice indices."""
    from edgenas.hardware.predictor import blas_threads

    with blas_threads(1):  # small products: threads only add contention (and spin) on a busy CPU
        return _evolve(codec, acc_fn, lat_fn, budget, config or EvolutionConfig(), target_name, allowed)


def _evolve(codec: GeneCodec, acc_fn: GeneFn, lat_fn: GeneFn, budget: float, cfg: EvolutionConfig,
            target_name: str, allowed: dict[str, list[int]] | None) -> EvolutionResult:
    rng = np.random.default_rng(cfg.seed)
    pool = GenePool(codec, allowed)
    t0, c0 = time.perf_counter(), time.process_time()
    P = cfg.population
    n_parents = max(1, int(round(P * cfg.parent_ratio)))
    n_mut = int(round(P * cfg.mutation_ratio))
    n_cross = P - n_mut

    # --- initial population: random subnets, biased towards small ones when few are feasible
    smallest = pool.smallest()[None, :]
    lat_small = lat_fn(smallest)
    best_seen = float(lat_small[0])
    pop, pop_lat, proposals = np.zeros((0, codec.G), dtype=np.int64), np.zeros(0), 1
    for attempt in range(cfg.max_tries):
        if len(pop) >= P:
            break
        # later attempts shrink towards the smallest choices
        g = pool.random(P * 4, rng, 1.0 if attempt == 0 else float(rng.random()) ** attempt)
        lat = lat_fn(g)
        proposals += len(g)
        best_seen = min(best_seen, float(lat.min()))
        ok = lat <= budget
        pop = np.concatenate([pop, g[ok]])[:P]
        pop_lat = np.concatenate([pop_lat, lat[ok]])[:P]
    if len(pop) == 0:
        if lat_small[0] <= budget:
            pop, pop_lat = smallest, lat_small
        else:
            raise BudgetUnreachable(
                f"no subnet meets {budget:g} ms on {target_name}: the fastest reached is {best_seen:.4g} ms "
                f"(the smallest subnet: {float(lat_small[0]):.4g} ms); raise the budget"
            )
    if len(pop) < P:  # fill with copies of the feasible ones
        reps = rng.integers(0, len(pop), P - len(pop))
        pop, pop_lat = np.concatenate([pop, pop[reps]]), np.concatenate([pop_lat, pop_lat[reps]])
    acc = acc_fn(pop)
    candidates, fallbacks, history = len(pop), 0, []
    best_i = int(np.argmax(acc))
    best = (pop[best_i].copy(), float(acc[best_i]), float(pop_lat[best_i]))

    for _ in range(cfg.generations):
        order = np.argsort(-acc, kind="stable")[:n_parents]
        parents, p_acc, p_lat = pop[order], acc[order], pop_lat[order]
        if p_acc[0] > best[1]:
            best = (parents[0].copy(), float(p_acc[0]), float(p_lat[0]))
        history.append(best[1])

        def mutants(k: int, parents: np.ndarray = parents) -> np.ndarray:
            if k == 0:
                return parents[:0]
            base = parents[rng.integers(0, len(parents), k)]
            u = rng.random((2, k, codec.G))  # one draw: the fresh genes and the mutation mask
            return np.where(u[1] < cfg.mutate_prob, pool.from_uniform(u[0]), base)

        def crossovers(k: int, parents: np.ndarray = parents) -> np.ndarray:
            if k == 0:
                return parents[:0]
            pick = rng.integers(0, len(parents), (2, k))
            return np.where(rng.random((k, codec.G)) < 0.5, parents[pick[0]], parents[pick[1]])

        # mutants and crossovers are proposed together: one latency call per round
        kids, kid_lat = [parents], [p_lat]
        need = [n_mut, n_cross]
        for _ in range(cfg.max_tries):
            if need[0] <= 0 and need[1] <= 0:
                break
            k = [int(np.ceil(max(m, 0) * cfg.oversample)) for m in need]
            batch = np.concatenate([mutants(k[0]), crossovers(k[1])])
            lat = lat_fn(batch)
            proposals += len(batch)
            ok = lat <= budget
            for part, (lo, hi) in enumerate(((0, k[0]), (k[0], k[0] + k[1]))):
                sel = lo + np.flatnonzero(ok[lo:hi])[: max(need[part], 0)]
                kids.append(batch[sel])
                kid_lat.append(lat[sel])
                need[part] -= len(sel)
        missing = max(need[0], 0) + max(need[1], 0)
        if missing:
            fallbacks += missing
            reps = rng.integers(0, len(parents), missing)
            kids.append(parents[reps])
            kid_lat.append(p_lat[reps])
        children = np.concatenate(kids[1:])
        child_acc = acc_fn(children)
        candidates += len(children)
        pop = np.concatenate([parents, children])
        pop_lat = np.concatenate(kid_lat)
        acc = np.concatenate([p_acc, child_acc])
    i = int(np.argmax(acc))
    if acc[i] > best[1]:
        best = (pop[i].copy(), float(acc[i]), float(pop_lat[i]))
    return EvolutionResult(codec.canonical(best[0][None, :])[0], best[1], best[2], time.perf_counter() - t0,
                           candidates, proposals, fallbacks, history, time.process_time() - c0)


# ------------------------------------------------------------------------------- batched latency models
class MeasuredSurrogate:
    """A latency model for a measured target (``cpu``): ``ms ~ a * MACs + b * layers + c`` fitted robustly
    (Huber) on ``n`` subnets measured on the device, evaluated on gene rows in numpy. The finder searches
    with it; :func:`edgenas.supernets.specialize.specialize` measures the answer and tightens the budget
    if the measurement exceeds it."""

    def __init__(self, codec: GeneCodec, layers: Any, measure: Callable[[dict[str, Any]], float],
                 n: int = 10, seed: int = 0) -> None:
        from edgenas.hardware.lut import Calibration

        self.codec, self.layers = codec, layers
        rng = np.random.default_rng(seed)
        genes = np.concatenate([codec.smallest()[None, :], codec.random(n - 1, rng)])
        self.archs = codec.to_archs(genes)
        self.measured = np.array([measure(a) for a in self.archs])
        macs, n_layers = self._costs(genes)
        self.calibration = Calibration.fit(macs, n_layers, self.measured)

    def _costs(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = self.layers.batch_layer_ids(self.codec.lut_codes(genes))
        macs = np.append(self.layers.layer_macs, 0.0)[ids].sum(axis=1) / 1e6
        return macs, (ids >= 0).sum(axis=1).astype(np.float64)

    def __call__(self, genes: np.ndarray) -> np.ndarray:
        return self.calibration.apply(*self._costs(genes))


class LutGenes:
    """A layer table evaluated on gene rows with one gather: the table is re-indexed once into
    ``slot_ms[r, w, slot, k, e]`` (the latency of the block in that slot with that kernel and expand ratio)
    and ``fixed_ms[r, w]`` (stem, first block and head), so a population's latency is a single fancy index,
    a masked sum and the table's calibration ``a * sum + b * layers + c``."""

    def __init__(self, model: Any, codec: GeneCodec) -> None:
        self.model, self.codec = model, codec
        L = model.layers
        S, M = codec.S, codec.M
        R, W = len(L.resolutions), len(L.widths)
        ri = np.arange(R)[:, None, None, None, None, None]
        # block ids per (r, w, stage, first/later, k, e) -> latency (NaN where the table has no entry)
        blk = model.values[ri, L.block]  # (R, W, S, 2, K, E)
        later = (np.arange(M) > 0).astype(np.int64)  # slot j of a stage: first block or a later one
        self.slot_ms = blk[:, :, :, later].reshape(R, W, S * M, *blk.shape[-2:])  # (R, W, S*M, K, E)
        self.fixed_ms = model.values[np.arange(R)[:, None, None], L.fixed].sum(axis=2)  # (R, W)
        self.n_fixed = L.fixed.shape[2]
        self.cal = model.table.calibration
        self.flat = self.slot_ms.reshape(-1)
        self.strides = np.array(self.slot_ms.strides) // self.slot_ms.itemsize
        self.slots = np.arange(S * M)

    def __call__(self, genes: np.ndarray) -> np.ndarray:
        c = self.codec
        r, w = genes[:, 0], genes[:, 1]
        st = self.strides
        idx = ((r * st[0] + w * st[1])[:, None] + self.slots[None, :] * st[2]
               + genes[:, c.sl_k] * st[3] + genes[:, c.sl_e] * st[4])
        act = c.active(genes)
        s = np.where(act, self.flat[idx], 0.0).sum(axis=1) + self.fixed_ms[r, w]
        if np.isnan(s).any():  # a missing entry: let the table's own error name it
            self.model.predict(c.to_archs(genes[np.isnan(s)][:1]))
        return self.cal.apply(s, act.sum(axis=1) + self.n_fixed)


def batched_latency(evaluator: Any, codec: GeneCodec, num_classes: int, in_channels: int,
                    surrogate_points: int = 10, seed: int = 0) -> tuple[GeneFn, str]:
    """A function gene rows -> latency (ms) for a target evaluator of :mod:`edgenas.evaluators`, and how
    it is computed (``lut``, ``predictor``, ``batch``, ``surrogate``)."""
    from edgenas.hardware.cost import MeasuredLatency
    from edgenas.hardware.targets import LutLatency, PredictedLatency

    if isinstance(evaluator, LutLatency):
        return LutGenes(evaluator.model, codec), "lut"
    if isinstance(evaluator, PredictedLatency):
        pred = evaluator.predictor

        def predicted(genes: np.ndarray) -> np.ndarray:
            return pred.predict_codes(codec.lut_codes(genes))

        return predicted, "predictor"
    if isinstance(evaluator, MeasuredLatency):
        from edgenas.hardware.layers import MBV3Layers

        sur = MeasuredSurrogate(codec, MBV3Layers(codec.space, num_classes, in_channels), evaluator,
                                surrogate_points, seed)
        return sur, "surrogate"

    def generic(genes: np.ndarray) -> np.ndarray:
        return np.asarray(evaluator.evaluate_batch(codec.to_archs(genes)), dtype=np.float64)

    return generic, "batch"
