"""Grid search: every architecture of a small space once, in a seeded random order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.search.base import Strategy
from edgenas.spaces.base import Arch

GRID_LIMIT = 100_000


@dataclass
class GridSearch(Strategy):
    shuffle: bool = True
    _order: list[Arch] = field(default_factory=list, init=False, repr=False)

    name = "grid"

    def __post_init__(self) -> None:
        size = self.space.size()
        if size > GRID_LIMIT:
            raise EdgenasError(
                f"grid search needs a space of at most {GRID_LIMIT:,} architectures; "
                f"'{self.space.name}' has {size:.3g}: use random or evolution"
            )
        self._order = list(self.space.enumerate())
        if self.shuffle:
            perm = np.random.default_rng(self.seed).permutation(len(self._order))
            self._order = [self._order[i] for i in perm]

    def ask(self) -> Arch:
        # Grid points are visited in order; the feasibility filter skips, never resamples.
        while self.n_asked < len(self._order):
            arch = self._order[self.n_asked]
            self.n_asked += 1
            if self.feasible is None or self.feasible(arch):
                return arch
        raise EdgenasError(f"grid search has visited all {len(self._order)} architectures")

    def _propose(self, rng: np.random.Generator) -> Arch:  # pragma: no cover - ask() is overridden
        raise NotImplementedError

    @property
    def exhausted(self) -> bool:
        return self.n_asked >= len(self._order)
