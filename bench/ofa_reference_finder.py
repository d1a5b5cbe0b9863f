"""Once-for-All's evolutionary finder written the way its authors structured it: one candidate at a time.

The baseline of the finder-speed comparison in ``bench/ofa_cifar.py --finder-only``. OFA's released finder
(Cai et al., "Once-for-All", ICLR 2020, section 3.4; the ``EvolutionFinder`` of its tutorial) draws,
mutates and crosses subnets one by one, draws each again until its latency meets the budget, and predicts
the accuracy of a generation's new children in one batch. This re-implementation keeps that structure:
a subnet is a Python list of choice indices, every proposal gets its own latency call, and there is one
accuracy call per generation (population 100, parent ratio 0.25, mutation ratio 0.5, mutation
probability 0.1, as OFA's defaults).

Two variants. ``ofa_lookups=False`` gives it the fastest parts available, so its speed is an upper bound
of the original's on this machine and the vectorised finder's advantage over it a lower bound: one
candidate's latency is a sum of Python floats taken from the same layer table, re-indexed once, and the
accuracy call is our vectorised predictor. ``ofa_lookups=True`` does what OFA's code does there instead:
the latency looks every layer up in a dict by a formatted string key, and each child's one-hot feature
vector is built in a Python loop before the (batched) predictor runs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np


class ReferenceFinder:
    """Per-candidate evolution over the genes of :class:`~edgenas.estimators.accuracy_predictor.GeneCodec`,
    with latency from an :class:`~edgenas.search.ofa_evolution.LutGenes` table."""

    def __init__(self, codec: Any, lut: Any, allowed: dict[str, list[int]] | None,
                 acc_genes: Callable[[np.ndarray], np.ndarray], ofa_lookups: bool = False) -> None:
        self.codec, self.acc_genes, self.ofa_lookups = codec, acc_genes, ofa_lookups
        allowed = allowed or {}
        self.choices = [sorted(allowed.get(n, range(len(c)))) for n, c in zip(codec.names, codec.choices,
                                                                               strict=True)]
        self.slot_ms = lut.slot_ms.tolist()  # [r][w][slot][k][e] as Python floats
        self.fixed_ms = lut.fixed_ms.tolist()
        self.n_fixed = int(lut.n_fixed)
        self.cal = (float(lut.cal.a), float(lut.cal.b), float(lut.cal.c))
        self.depths = [int(d) for d in codec.depth_values]
        S, M = codec.S, codec.M
        self.S, self.M, self.k0, self.e0 = S, M, 2 + S, 2 + S + S * M
        self.depth_genes = list(range(2, 2 + S))
        self.block_genes = [(self.k0 + i, self.e0 + i) for i in range(S * M)]
        self.values = [list(c) for c in codec.choices]
        if ofa_lookups:  # the same entries under string keys, as OFA's latency tables store them
            self.keyed = {self._key(r, w, slot, k, e): v
                          for r, by_w in enumerate(self.slot_ms) for w, by_slot in enumerate(by_w)
                          for slot, by_k in enumerate(by_slot) for k, by_e in enumerate(by_k)
                          for e, v in enumerate(by_e)}

    def _key(self, r: int, w: int, slot: int, k: int, e: int) -> str:
        res, width = self.values[0][r], self.values[1][w]
        kernel, expand = self.values[self.k0 + slot][k], self.values[self.e0 + slot][e]
        return f"mbconv-input:{res}x{res}-width:{width}-slot:{slot}-expand:{expand}-kernel:{kernel}"

    def _latency_keyed(self, g: list[int]) -> float:
        total, layers = self.fixed_ms[g[0]][g[1]], self.n_fixed
        for s in range(self.S):
            for j in range(self.depths[g[2 + s]]):
                slot = s * self.M + j
                total += self.keyed[self._key(g[0], g[1], slot, g[self.k0 + slot], g[self.e0 + slot])]
                layers += 1
        a, b, c = self.cal
        return a * total + b * layers + c

    def _features(self, g: list[int]) -> np.ndarray:
        """One child's one-hot vector, gene by gene (what OFA's arch encoder does per subnet)."""
        codec = self.codec
        feature = np.zeros(codec.n_features)
        active = [j < self.depths[g[2 + s]] for s in range(self.S) for j in range(self.M)]
        for i, choice in enumerate(g):
            if i >= self.k0 and not active[(i - self.k0) % (self.S * self.M)]:
                continue
            feature[codec.offsets[i] + choice] = 1.0
        return feature

    def latency(self, g: list[int]) -> float:
        if self.ofa_lookups:
            return self._latency_keyed(g)
        table = self.slot_ms[g[0]][g[1]]
        total, layers = self.fixed_ms[g[0]][g[1]], self.n_fixed
        for s in range(self.S):
            for j in range(self.depths[g[2 + s]]):
                slot = s * self.M + j
                total += table[slot][g[self.k0 + slot]][g[self.e0 + slot]]
                layers += 1
        a, b, c = self.cal
        return a * total + b * layers + c

    def run(self, budget: float, population: int = 100, generations: int = 500, parent_ratio: float = 0.25,
            mutation_ratio: float = 0.5, mutate_prob: float = 0.1, seed: int = 0) -> dict[str, Any]:
        rnd = random.Random(seed)
        choices, proposals = self.choices, 0

        def feasible(make: Callable[[], list[int]]) -> tuple[list[int], float]:
            nonlocal proposals
            for _ in range(100_000):  # OFA's finder draws again until the budget is met
                g = make()
                lat = self.latency(g)
                proposals += 1
                if lat <= budget:
                    return g, lat
            raise RuntimeError(f"no subnet within {budget} ms in 100,000 draws; raise the budget")

        def sample() -> list[int]:
            return [rnd.choice(c) for c in choices]

        def mutate(parent: list[int]) -> list[int]:
            g = list(parent)
            for i in (0, 1, *self.depth_genes):  # resolution, width, then each stage's depth
                if rnd.random() < mutate_prob:
                    g[i] = rnd.choice(choices[i])
            for ki, ei in self.block_genes:  # each block's kernel and expand ratio
                if rnd.random() < mutate_prob:
                    g[ki] = rnd.choice(choices[ki])
                if rnd.random() < mutate_prob:
                    g[ei] = rnd.choice(choices[ei])
            return g

        def crossover(p1: list[int], p2: list[int]) -> list[int]:
            return [a if rnd.random() < 0.5 else b for a, b in zip(p1, p2, strict=True)]

        t0, c0 = time.perf_counter(), time.process_time()
        pop = [feasible(sample) for _ in range(population)]
        accs = self.acc_genes(np.array([g for g, _ in pop]))
        scored = [(float(a), g, lat) for a, (g, lat) in zip(accs, pop, strict=True)]
        candidates = len(scored)
        n_parents, n_mut = int(round(population * parent_ratio)), int(round(population * mutation_ratio))
        best = max(scored, key=lambda t: t[0])
        for _ in range(generations):
            parents = sorted(scored, key=lambda t: t[0], reverse=True)[:n_parents]
            best = max(best, parents[0], key=lambda t: t[0])
            genes = [g for _, g, _ in parents]
            kids = [feasible(lambda genes=genes: mutate(rnd.choice(genes))) for _ in range(n_mut)]
            kids += [feasible(lambda genes=genes: crossover(rnd.choice(genes), rnd.choice(genes)))
                     for _ in range(population - n_mut)]
            if self.ofa_lookups:
                np.stack([self._features(g) for g, _ in kids])
            accs = self.acc_genes(np.array([g for g, _ in kids]))
            candidates += len(kids)
            scored = parents + [(float(a), g, lat) for a, (g, lat) in zip(accs, kids, strict=True)]
        best = max([best, *scored], key=lambda t: t[0])
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"seconds": seconds, "cpu_seconds": cpu, "candidates": candidates, "proposals": proposals,
                "candidates_per_second": candidates / seconds, "candidates_per_cpu_second": candidates / cpu,
                "predicted_accuracy": best[0], "latency_ms": best[2]}
