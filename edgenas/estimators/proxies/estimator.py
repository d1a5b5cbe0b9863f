"""Zero-shot proxies as accuracy estimators: ``--estimator proxy:NAME``.

``proxy:zen`` (any registered proxy) builds the architecture with the context's seed, scores it on one
seeded batch of the context's data at the architecture's resolution, and returns the score. ``proxy:ensemble``
(the default members, see :data:`DEFAULT_MEMBERS`) or ``proxy:a+b+c`` returns a mean-rank vote: each
member's score is turned into the fraction of a fixed, seeded reference sample of the space that it beats,
and the fractions are averaged (a value in [0, 1] that stays comparable from one call to the next, which
a vote re-ranked inside each batch would not).

Options (``EvalContext.options``, ``edgenas search --estimator-option KEY=VALUE``): ``proxy_batch``
(default 64), ``ensemble_reference`` (default 32 architectures), ``grasp_hvp`` (``exact`` or ``frozen``,
GraSP's Hessian-vector product, see :mod:`edgenas.estimators.proxies.grasp`).

Scores that come out NaN or infinite are returned as ``-inf`` (ranked last by any maximising search) and
counted in ``nonfinite``; they never raise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from edgenas.estimators.proxies import ENSEMBLE, get_proxy, parse_members
from edgenas.estimators.proxies.base import check_batch_size
from edgenas.estimators.proxies.ensemble import percentile_vote
from edgenas.evaluators import EvalContext, Evaluator
from edgenas.spaces.base import SearchSpace

DEFAULT_BATCH = 64
DEFAULT_REFERENCE = 32


class ProxyEstimator(Evaluator):
    """One proxy's score of an architecture at initialisation (higher is better)."""

    unit = "score"
    direction = "maximize"
    cheap = False

    def __init__(self, space: SearchSpace, data: Any, proxy: str, batch_size: int = DEFAULT_BATCH,
                 seed: int = 0, grasp_hvp: str = "exact") -> None:
        self.proxy = get_proxy(proxy)
        self.name = f"proxy:{proxy}"
        self.kwargs: dict[str, Any] = {"hvp": grasp_hvp} if proxy == "grasp" else {}
        self.space, self.data, self.batch_size, self.seed = space, data, batch_size, seed
        check_batch_size(self.proxy, batch_size)
        self.nonfinite = 0
        self._memo: dict[str, float] = {}
        self._batches: dict[int, Any] = {}

    def raw(self, arch: Mapping[str, Any]) -> float:
        """The proxy's score as computed (NaN/inf included), memoised per architecture."""
        canon = self.space.validate(arch)
        key = self.space.key(canon)
        if key not in self._memo:
            resolution = self.space.resolution(canon)
            if resolution not in self._batches:
                self._batches[resolution] = self.data.batch(self.batch_size, self.seed, resolution=resolution)

            def build() -> Any:
                return self.space.build(canon, self.data.num_classes, self.data.in_channels, self.seed)

            self._memo[key] = self.proxy(build, self._batches[resolution], self.seed, **self.kwargs)
        return self._memo[key]

    def __call__(self, arch: Mapping[str, Any]) -> float:
        value = self.raw(arch)
        if not math.isfinite(value):
            self.nonfinite += 1
            return -math.inf
        return value

    def describe(self) -> str:
        extra = f", Hessian-vector product {self.kwargs['hvp']}" if self.kwargs else ""
        return f"{self.name}: {self.proxy.summary} ({self.proxy.citation}); batch {self.batch_size}{extra}"


class ProxyEnsembleEstimator(Evaluator):
    """The mean-rank vote of several proxies against a fixed reference sample (see the module docstring)."""

    unit = "vote"
    direction = "maximize"
    cheap = False

    def __init__(self, space: SearchSpace, data: Any, members: Sequence[str], batch_size: int = DEFAULT_BATCH,
                 seed: int = 0, reference: int = DEFAULT_REFERENCE, grasp_hvp: str = "exact") -> None:
        self.members = tuple(members)
        self.name = "proxy:" + "+".join(self.members)
        self.space = space
        self.scorers = {m: ProxyEstimator(space, data, m, batch_size, seed, grasp_hvp) for m in self.members}
        self.reference_size, self.seed = reference, seed
        self._reference: dict[str, list[float]] | None = None
        self.nonfinite = 0

    def reference(self) -> dict[str, list[float]]:
        """Member scores of the reference sample (drawn with the seed, scored once)."""
        if self._reference is None:
            from edgenas.estimators.proxies.study import sample_archs

            n = min(self.reference_size, self.space.size())
            archs = sample_archs(self.space, n, self.seed + 7919)  # a sample apart from the search's own
            self._reference = {m: [s.raw(a) for a in archs] for m, s in self.scorers.items()}
        return self._reference

    def __call__(self, arch: Mapping[str, Any]) -> float:
        scores = {m: s.raw(arch) for m, s in self.scorers.items()}
        if not all(math.isfinite(v) for v in scores.values()):
            self.nonfinite += 1
        return percentile_vote(scores, self.reference())

    def describe(self) -> str:
        return (f"{self.name}: mean-rank vote of {', '.join(self.members)} against {self.reference_size} "
                f"reference architectures")


def make_proxy_estimator(arg: str, ctx: EvalContext) -> Evaluator:
    """The factory of ``proxy:ARG`` (registered in :data:`edgenas.evaluators.ESTIMATOR_PREFIXES`)."""
    batch = int(ctx.options.get("proxy_batch", DEFAULT_BATCH))
    hvp = str(ctx.options.get("grasp_hvp", "exact"))
    if arg == ENSEMBLE or "+" in arg:
        members = parse_members(arg)
        return ProxyEnsembleEstimator(ctx.space, ctx.data, members, batch, ctx.seed,
                                      int(ctx.options.get("ensemble_reference", DEFAULT_REFERENCE)), hvp)
    get_proxy(arg)  # an unknown name lists the valid ones before any data is loaded
    return ProxyEstimator(ctx.space, ctx.data, arg, batch, ctx.seed, hvp)
