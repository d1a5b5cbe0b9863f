"""Regularized (aging) evolution, Real et al., "Regularized Evolution for Image Classifier Architecture
Search" (AAAI 2019).

A population of the ``population_size`` most recently evaluated architectures; each new candidate is a
mutation of the best of ``sample_size`` members drawn at random (tournament); the oldest member leaves
when a new one arrives (aging). The first ``population_size`` candidates are random.

Constraint handling: infeasible architectures enter the population (they age out like any other) but are
never chosen as parents; if a tournament draws only infeasible members, the candidate is a fresh random
sample. With a cheap ``feasible`` predicate, mutations are redrawn a bounded number of times.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edgenas.search.base import Strategy, TrialResult
from edgenas.spaces.base import Arch


@dataclass
class RegularizedEvolution(Strategy):
    population_size: int = 20
    sample_size: int = 5
    mutation_prob: float | None = None
    _population: deque = field(default_factory=deque, init=False, repr=False)

    name = "evolution"

    def _propose(self, rng: np.random.Generator) -> Arch:
        if self.n_told < self.population_size or not self._population:
            return self.space.sample(rng)
        members = list(self._population)
        picks = rng.choice(len(members), size=min(self.sample_size, len(members)), replace=False)
        contenders = [members[i] for i in picks if members[i][2]]
        if not contenders:
            return self.space.sample(rng)
        parent = max(contenders, key=lambda m: m[1])[0]
        return self.space.mutate(parent, rng, self.mutation_prob)

    def _observe(self, arch: Arch, result: TrialResult) -> None:
        score = result.score(self.objectives)
        ok = result.feasible and not math.isnan(score)
        self._population.append((arch, score if ok else -math.inf, ok))
        while len(self._population) > self.population_size:
            self._population.popleft()
