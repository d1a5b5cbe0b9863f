"""Random search: uniform samples of the space (the baseline of Li & Talwalkar, UAI 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenas.search.base import Strategy
from edgenas.spaces.base import Arch


@dataclass
class RandomSearch(Strategy):
    name = "random"

    def _propose(self, rng: np.random.Generator) -> Arch:
        return self.space.sample(rng)
