"""Search strategies behind one ask/tell interface (see :mod:`edgenas.search.base`).

``make_strategy(name, space, ...)`` builds one by registry name; ``STRATEGIES`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgenas.errors import unknown_name
from edgenas.search.base import Objective, Strategy, TrialResult
from edgenas.search.bayes import ThompsonBayes
from edgenas.search.eas import NetworkTransformationSearch
from edgenas.search.evolution import RegularizedEvolution
from edgenas.search.grid import GridSearch
from edgenas.search.random_search import RandomSearch
from edgenas.search.reinforce import ReinforceController
from edgenas.spaces.base import SearchSpace


def _optuna(sampler: str) -> Callable[..., Strategy]:
    def make(**kw: Any) -> Strategy:
        from edgenas.search.optuna_strategy import OptunaStrategy

        return OptunaStrategy(sampler_name=sampler, **kw)

    return make


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "random": RandomSearch,
    "grid": GridSearch,
    "evolution": RegularizedEvolution,
    "tpe": _optuna("tpe"),
    "nsga2": _optuna("nsga2"),
    "reinforce": ReinforceController,
    "bo": ThompsonBayes,
    "eas": NetworkTransformationSearch,
}


def make_strategy(name: str, space: SearchSpace, **kwargs: Any) -> Strategy:
    """A strategy by name (``random``, ``grid``, ``evolution``, ``tpe``, ``nsga2``, ...)."""
    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)
    return STRATEGIES[name](space=space, **kwargs)


__all__ = ["Objective", "STRATEGIES", "Strategy", "TrialResult", "make_strategy"]
