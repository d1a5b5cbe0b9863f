"""The ask/tell interface every search strategy speaks.

A strategy proposes architectures (``ask``) and is told their results (``tell``). It never builds a
model or evaluates anything, so the same strategy runs against a trained network, a zero-shot proxy or a
look-up table. Its state is a function of what it was told, in order, plus its seed: the experiment
rebuilds it after a crash by replaying the stored trials through ``tell``.

Constraints are first-class: a :class:`TrialResult` says whether the architecture met every constraint,
and strategies never pick an infeasible one as a parent. Strategies may be given a cheap ``feasible``
predicate (a look-up table, a predictor) to filter candidates before they cost an evaluation; they try
a bounded number of candidates and never loop forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.spaces.base import Arch, SearchSpace

Objective = tuple[str, str]  # (metric name, "maximize" | "minimize")
FeasibleFn = Callable[[Mapping[str, Any]], bool]


@dataclass
class TrialResult:
    """What a strategy is told about an evaluated architecture."""

    metrics: dict[str, float]
    feasible: bool = True

    def score(self, objectives: Sequence[Objective]) -> float:
        """The first objective, signed so that larger is better (for single-objective strategies)."""
        name, direction = objectives[0]
        value = self.metrics.get(name, float("nan"))
        return value if direction == "maximize" else -value


@dataclass
class Strategy(ABC):
    """Base class of search strategies (see the module docstring).

    ``max_tries`` bounds how many candidates ``ask`` draws when a ``feasible`` predicate rejects them;
    past it the last candidate is returned and the experiment records it as infeasible.
    """

    space: SearchSpace
    objectives: Sequence[Objective] = (("accuracy", "maximize"),)
    seed: int = 0
    feasible: FeasibleFn | None = None
    max_tries: int = 200
    n_asked: int = field(default=0, init=False)
    n_told: int = field(default=0, init=False)

    name = "strategy"

    def rng(self) -> np.random.Generator:
        """A generator seeded by (seed, number of asks so far): deterministic and resume-friendly."""
        return np.random.default_rng([self.seed, self.n_asked])

    def ask(self) -> Arch:
        """Propose the next architecture (canonical form)."""
        self.n_asked += 1
        rng = self.rng()
        arch = self._propose(rng)
        tries = 1
        while self.feasible is not None and not self.feasible(arch) and tries < self.max_tries:
            arch = self._propose(rng)
            tries += 1
        return self.space.validate(arch)

    def tell(self, arch: Mapping[str, Any], result: TrialResult) -> None:
        """Record the result of an architecture this strategy (or a replay) proposed."""
        self.n_told += 1
        self._observe(self.space.validate(arch), result)

    @abstractmethod
    def _propose(self, rng: np.random.Generator) -> Arch:
        """One candidate."""

    def _observe(self, arch: Arch, result: TrialResult) -> None:  # noqa: B027 - optional hook
        """Update internal state (default: nothing)."""

    @property
    def exhausted(self) -> bool:
        """True when the strategy has nothing left to propose (grid search over a finite space)."""
        return False
