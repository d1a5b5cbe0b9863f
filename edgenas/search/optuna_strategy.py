"""Optuna's samplers behind edgenas's ask/tell interface: TPE (Bergstra et al., NeurIPS 2011) and
NSGA-II (Deb et al., IEEE TEC 2002).

The strategy keeps a private in-memory Optuna study whose trials mirror what it was told, so it works
with any store and is rebuilt by replay like every other strategy. Each dimension is a categorical
parameter, suggested define-by-run so that inactive dimensions (blocks beyond a stage's depth) are
never suggested. Infeasible results are told as pruned trials: NSGA-II never selects them as parents
and TPE ranks them below every complete trial.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from edgenas.search.base import Strategy, TrialResult
from edgenas.spaces.base import Arch

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class OptunaStrategy(Strategy):
    """Wraps an Optuna sampler; ``sampler_name`` is ``tpe`` or ``nsga2``."""

    sampler_name: str = "tpe"
    population_size: int = 20
    _study: Any = field(default=None, init=False, repr=False)
    _pending: dict[str, list[Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sampler_name == "nsga2":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(
                population_size=self.population_size, seed=self.seed
            )
        else:
            with warnings.catch_warnings():  # multivariate/group are marked experimental by Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(seed=self.seed, multivariate=True, group=True,
                                                     n_startup_trials=10)
        directions = [d for _, d in self.objectives]
        self._study = optuna.create_study(directions=directions, sampler=sampler)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.sampler_name

    def _propose(self, rng: np.random.Generator) -> Arch:
        trial = self._study.ask()
        arch = self.space.suggest(trial)
        self._pending.setdefault(self.space.key(arch), []).append(trial)
        return arch

    def ask(self) -> Arch:
        arch = super().ask()
        # Candidates rejected by the feasibility filter are told back as pruned right away.
        key = self.space.key(arch)
        for k, trials in list(self._pending.items()):
            if k != key:
                for t in trials:
                    self._study.tell(t, state=optuna.trial.TrialState.PRUNED)
                del self._pending[k]
        return arch

    def _observe(self, arch: Arch, result: TrialResult) -> None:
        key = self.space.key(arch)
        trials = self._pending.pop(key, [])
        if not trials:  # a replayed result: add it as a finished trial
            self._add_finished(arch, result)
            return
        for t in trials:
            values = self._values(result)
            if values is None:
                self._study.tell(t, state=optuna.trial.TrialState.PRUNED)
            else:
                self._study.tell(t, values)

    def _values(self, result: TrialResult) -> list[float] | None:
        if not result.feasible:
            return None
        values = [float(result.metrics.get(name, math.nan)) for name, _ in self.objectives]
        return None if any(math.isnan(v) or math.isinf(v) for v in values) else values

    def _add_finished(self, arch: Mapping[str, Any], result: TrialResult) -> None:
        values = self._values(result)
        state = optuna.trial.TrialState.COMPLETE if values is not None else optuna.trial.TrialState.PRUNED
        active = {n: arch[n] for n in self.space.active_names(arch)}
        self._study.add_trial(
            optuna.trial.create_trial(
                params=active, distributions=self.space.distributions(arch), values=values, state=state
            )
        )
