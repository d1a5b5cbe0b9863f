"""Growth by network transformations with a REINFORCE-trained policy, after EAS.

Cai, Chen, Zhang, Yu & Wang, "Efficient Architecture Search by Network Transformation" (AAAI 2018): a
meta-controller grows a trained network by function-preserving transformations (Net2Net wider / deeper),
is rewarded by the grown network's accuracy and trained by REINFORCE; each new network starts from its
parent's weights, so evaluations are short. Here the transformations are one-step increases of the space's
ordered dimensions (a larger kernel or expand ratio, one block more in a stage, and resolution or width
where the space has them): with ``--estimator net2net`` (:mod:`edgenas.estimators.net2net`) each child
then trains from its parent's function, as in EAS.

Simplifications, stated: EAS's controller is a bidirectional LSTM that reads the parent network and emits
where to widen and deepen; this policy is factorised, one Bernoulli "grow this dimension" per ordered
dimension with probability ``sigmoid(theta_d)``, trained by REINFORCE with a moving-average baseline
(rewards scaled by the moving average of their deviation, as :mod:`edgenas.search.reinforce`). The parent
of each proposal is drawn uniformly from the ``top_k`` best feasible architectures told so far (EAS keeps
the best); the first proposal is the space's smallest architecture. A child repeats no told architecture;
when no parent can grow into a new one, the proposal is a random architecture.

State: a told architecture's parent is the best-scoring earlier told architecture that it grows by one step
in some dimensions (found from the told history, not remembered from ``ask``), so replaying the stored
trials rebuilds the policy exactly (the resume contract of :mod:`edgenas.search.base`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.search.base import Strategy, TrialResult
from edgenas.spaces.base import Arch


@dataclass
class NetworkTransformationSearch(Strategy):
    """EAS-style growth (see the module docstring)."""

    learning_rate: float = 0.5
    initial_logit: float = -1.0  # each dimension grows with probability sigmoid(-1) = 0.27 at first
    baseline_decay: float = 0.8
    top_k: int = 3
    max_child_tries: int = 20
    name = "eas"
    theta: dict[str, float] = field(default_factory=dict, init=False)
    told: list[tuple[Arch, float, bool]] = field(default_factory=list, init=False)
    baseline: float | None = field(default=None, init=False)
    scale: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._dims = {d.name: d for d in self.space.dimensions if d.ordered and len(d.choices) > 1}
        if not self._dims:
            raise EdgenasError(f"the eas strategy grows ordered dimensions (depths, kernels, widths); space "
                               f"'{self.space.name}' has none: use random, evolution or reinforce")
        self.theta = {name: self.initial_logit for name in self._dims}
        self._seen: set[str] = set()

    # ----------------------------------------------------------------- helpers
    def probability(self, dim: str) -> float:
        """The probability that a proposal grows ``dim`` (where it can)."""
        return 1.0 / (1.0 + math.exp(-self.theta[dim]))

    def _index(self, arch: Mapping[str, Any], dim: str) -> int:
        return self._dims[dim].choices.index(arch[dim])

    def _growable(self, arch: Mapping[str, Any]) -> list[str]:
        return [d for d in self.space.active_names(arch)
                if d in self._dims and self._index(arch, d) < len(self._dims[d].choices) - 1]

    def _grown(self, parent: Mapping[str, Any], dims: list[str]) -> Arch:
        child = dict(parent)
        for d in dims:
            child[d] = self._dims[d].choices[self._index(parent, d) + 1]
        return self.space.validate(child)

    def _steps(self, child: Mapping[str, Any], parent: Mapping[str, Any]) -> list[str] | None:
        """The dimensions ``child`` grows ``parent`` by (one step each), or None if it is not such a child."""
        grown = []
        for name in self.space.names:
            if child[name] == parent[name]:
                continue
            if name not in self._dims or self._index(child, name) != self._index(parent, name) + 1:
                return None
            grown.append(name)
        return grown or None

    # -------------------------------------------------------------- ask / tell
    def _propose(self, rng: np.random.Generator) -> Arch:
        if not self.told:
            return self.space.validate(self.space.extreme(smallest=True))
        ranked = sorted((t for t in self.told if t[2]), key=lambda t: -t[1])[: self.top_k]
        for _ in range(self.max_child_tries if ranked else 0):
            parent = ranked[int(rng.integers(len(ranked)))][0]
            growable = self._growable(parent)
            if not growable:
                continue
            picks = [d for d in growable if rng.random() < self.probability(d)]
            if not picks:
                weights = np.array([self.probability(d) for d in growable])
                picks = [growable[int(rng.choice(len(growable), p=weights / weights.sum()))]]
            child = self._grown(parent, picks)
            if self.space.key(child) not in self._seen:
                return child
        return self.space.sample(rng)

    def _observe(self, arch: Arch, result: TrialResult) -> None:
        value = result.score(self.objectives)
        feasible = result.feasible and math.isfinite(value)
        if not feasible:
            finite = [t[1] for t in self.told if t[2]]
            value = min(finite) if finite else 0.0
        parent = self._parent_of(arch)
        if parent is not None:
            self._reinforce(arch, parent, value)
        self.told.append((arch, value, feasible))
        self._seen.add(self.space.key(arch))

    def _parent_of(self, arch: Arch) -> Arch | None:
        candidates = [(t[1], -i, t[0]) for i, t in enumerate(self.told)
                      if t[2] and self._steps(arch, t[0]) is not None]
        return max(candidates, key=lambda c: c[:2])[2] if candidates else None

    def _reinforce(self, arch: Arch, parent: Arch, reward: float) -> None:
        if self.baseline is None:
            self.baseline = reward
            return
        if self.scale is None:
            self.scale = max(abs(reward - self.baseline), 1e-8)
        advantage = float(np.clip((reward - self.baseline) / max(self.scale, 1e-8), -3.0, 3.0))
        grown = set(self._steps(arch, parent) or [])
        for d in self._growable(parent):  # d log p(actions) / d theta_d = action - p
            self.theta[d] += self.learning_rate * advantage * ((d in grown) - self.probability(d))
        self.scale = self.baseline_decay * self.scale + (1 - self.baseline_decay) * abs(reward - self.baseline)
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
