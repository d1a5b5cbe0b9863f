"""Bayesian optimisation with a Bayesian linear surrogate and Thompson sampling.

The surrogate is Bayesian linear regression on architecture features, as in DNGO (Snoek et al.,
"Scalable Bayesian Optimization Using Deep Neural Networks", ICML 2015), here on fixed features: the
space's ``surrogate_features(archs)`` when it has them (the NB201 space gives one-hot ops plus the path
encoding of BANANAS, White et al., AAAI 2021), else its one-hot encoding. Each ``ask`` draws one weight
vector from the posterior and proposes the unseen, feasible candidate whose sampled score is highest:
Thompson sampling (Thompson, 1933; Russo et al., "A Tutorial on Thompson Sampling", 2018), which balances
exploring uncertain feature combinations against exploiting good ones with no acquisition to tune.

Details:

* targets are the first objective's values, rank-transformed to normal scores (a Gaussian copula, as in
  HEBO, Cowen-Rivers et al., JAIR 2022), so that a few very bad architectures (10% accuracy) do not
  dominate the fit; infeasible and non-finite results are left out of the fit;
* the prior on the weights is ``N(0, 1/prior_precision)``, by default with the precision equal to the
  number of non-zero features of an architecture, so that a prediction's prior variance is about 1, the
  variance of the normal scores; the noise variance is ``noise`` (on the normal-score scale);
* candidates: every architecture of the space when it has at most ``enumerate_limit`` of them (NB201's
  15,625: the acquisition is then maximised exactly); otherwise ``pool_size`` candidates, half of them
  mutations of the best ``top_k`` architectures told so far and half random samples. The cheap
  ``feasible`` predicate filters the candidates (its verdict is cached per architecture), so with a
  latency lookup table no query is spent on an infeasible architecture, and an architecture already told
  is never proposed again;
* the first ``n_init`` proposals are random samples.

State: the told architectures and results, in order; the model is refitted from them at every ask, so a
replay of the tells rebuilds the strategy exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.search._blas import single_thread_blas
from edgenas.search.base import Strategy, TrialResult
from edgenas.spaces.base import Arch


@dataclass
class ThompsonBayes(Strategy):
    """Thompson sampling from a Bayesian linear surrogate (see the module docstring)."""

    n_init: int = 10
    prior_precision: float | None = None
    noise: float = 0.3
    enumerate_limit: int = 20_000
    pool_size: int = 1_000
    top_k: int = 10
    _keys: list[tuple[Any, ...]] = field(default_factory=list, init=False, repr=False)
    _archs: list[Arch] = field(default_factory=list, init=False, repr=False)
    _scores: list[float] = field(default_factory=list, init=False, repr=False)
    _told: set[tuple[Any, ...]] = field(default_factory=set, init=False, repr=False)
    _features: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _all: _Enumerated | None = field(default=None, init=False, repr=False)
    _feasible_cache: dict[tuple[Any, ...], bool] = field(default_factory=dict, init=False, repr=False)

    name = "bo"

    # ------------------------------------------------------------- features
    def _signature(self, arch: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(arch[n] for n in self.space.names)

    def _featurize(self, archs: list[Arch]) -> np.ndarray:
        hook = getattr(self.space, "surrogate_features", None)
        feats = hook(archs) if hook is not None else self.space.encode_batch(archs)
        return np.hstack([np.ones((len(archs), 1)), np.asarray(feats, dtype=float)])

    def _is_feasible(self, arch: Arch, key: tuple[Any, ...]) -> bool:
        if self.feasible is None:
            return True
        ok = self._feasible_cache.get(key)
        if ok is None:
            ok = self._feasible_cache[key] = bool(self.feasible(arch))
        return ok

    # ------------------------------------------------------------------ ask
    def _propose(self, rng: np.random.Generator) -> Arch:
        told = [i for i, s in enumerate(self._scores) if math.isfinite(s)]
        if len(told) < max(2, self.n_init):
            return self._fresh_sample(rng)
        if self._all is None and self.space.size() <= self.enumerate_limit:
            self._all = self._enumerate()
        if self._all is not None:
            archs, feats, available = self._all.archs, self._all.features, self._all.available
        else:
            archs, feats = self._mutation_pool(rng)
            available = np.ones(len(archs), dtype=bool)
        if not available.any():
            return self._fresh_sample(rng)
        x = np.stack([self._features[self._keys[i]] for i in told])
        y = _normal_scores(np.array([self._scores[i] for i in told]))
        with single_thread_blas():
            sampled = feats @ self._posterior_sample(x, y, rng)
        return archs[int(np.argmax(np.where(available, sampled, -np.inf)))]

    def _fresh_sample(self, rng: np.random.Generator) -> Arch:
        arch = self.space.sample(rng)
        for _ in range(self.max_tries):
            key = self._signature(arch)
            if key not in self._told and self._is_feasible(arch, key):
                break
            arch = self.space.sample(rng)
        return arch

    def _posterior_sample(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of the weights from the BLR posterior ``N(A^-1 X^T y / s2, A^-1)``,
        ``A = X^T X / s2 + prior_precision I``."""
        precision = self.prior_precision
        if precision is None:  # prior variance of a prediction ~ 1, the variance of the normal scores
            precision = float(np.count_nonzero(x, axis=1).mean())
        a = x.T @ x / self.noise + precision * np.eye(x.shape[1])
        chol = np.linalg.cholesky(a)
        mean = np.linalg.solve(chol.T, np.linalg.solve(chol, x.T @ y / self.noise))
        # If A = L L^T, then L^-T z has covariance A^-1.
        return mean + np.linalg.solve(chol.T, rng.standard_normal(len(mean)))

    def _enumerate(self) -> _Enumerated:
        """Every architecture of the (small) space, its features, and which are still available
        (feasible and not told yet)."""
        archs = list(self.space.enumerate())
        keys = [self._signature(a) for a in archs]
        available = np.array([k not in self._told and self._is_feasible(a, k)
                              for a, k in zip(archs, keys, strict=True)], dtype=bool)
        return _Enumerated(archs, {k: i for i, k in enumerate(keys)}, self._featurize(archs), available)

    def _mutation_pool(self, rng: np.random.Generator) -> tuple[list[Arch], np.ndarray]:
        """Neighbours and mutations of the best architectures told so far plus random samples (unseen,
        feasible, without repeats)."""
        order = sorted((i for i, s in enumerate(self._scores) if math.isfinite(s)),
                       key=lambda i: -self._scores[i])[: self.top_k]
        per_parent = self.pool_size // (2 * max(1, len(order)))
        proposals = [self.space.mutate(self._archs[i], rng) for i in order for _ in range(per_parent)]
        proposals += [self.space.sample(rng) for _ in range(self.pool_size - len(proposals))]
        archs, seen = [], set()
        for arch in proposals:
            key = self._signature(arch)
            if key in seen or key in self._told or not self._is_feasible(arch, key):
                continue
            seen.add(key)
            archs.append(arch)
        feats = self._featurize(archs) if archs else np.zeros((0, 1))
        return archs, feats

    # ----------------------------------------------------------------- tell
    def _observe(self, arch: Arch, result: TrialResult) -> None:
        key = self._signature(arch)
        score = result.score(self.objectives) if result.feasible else math.nan
        self._told.add(key)
        self._keys.append(key)
        self._archs.append(arch)
        self._scores.append(score if math.isfinite(score) else math.nan)
        if key not in self._features:
            self._features[key] = self._featurize([arch])[0]
        if self._all is not None and key in self._all.index:
            self._all.available[self._all.index[key]] = False


@dataclass
class _Enumerated:
    """The whole space of a small search space, for exact maximisation of the acquisition."""

    archs: list[Arch]
    index: dict[tuple[Any, ...], int]
    features: np.ndarray
    available: np.ndarray


def _normal_scores(y: np.ndarray) -> np.ndarray:
    """Rank-transform ``y`` to standard-normal quantiles (ties broken by order)."""
    from scipy.special import ndtri  # lazily: scipy.special takes half a second to import

    ranks = np.argsort(np.argsort(y, kind="stable"), kind="stable")
    return ndtri((ranks + 0.5) / len(y))
