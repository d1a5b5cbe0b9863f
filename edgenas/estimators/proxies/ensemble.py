"""Rank aggregation of several proxies: the mean-rank vote.

Abdelfattah et al. (ICLR 2021, section 5) rank architectures by a vote of synflow, jacob_cov and snip;
Mellor et al. and later studies (e.g. Krishnakumar et al., "NAS-Bench-Suite-Zero", NeurIPS 2022 D&B)
combine proxies the same way: each proxy ranks the candidates, and the candidates are ordered by their
mean rank. Scores that are NaN or infinite rank last (tied), so a proxy that fails on some networks
cannot push them up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from edgenas.errors import EdgenasError

#: The default members of ``proxy:ensemble`` (see docs/proxies.md for how they were chosen).
DEFAULT_MEMBERS: tuple[str, ...] = ("synflow", "naswot", "params")


def finite_or_last(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """``scores`` with every NaN/inf replaced by a value below every finite score (so they rank last)."""
    a = np.asarray(scores, dtype=np.float64).copy()
    bad = ~np.isfinite(a)
    if bad.any():
        floor = a[~bad].min() - 1.0 if (~bad).any() else 0.0
        a[bad] = floor
    return a


def count_nonfinite(scores: Sequence[float] | np.ndarray) -> int:
    return int((~np.isfinite(np.asarray(scores, dtype=np.float64))).sum())


def ranks(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Average ranks, 1 = worst; non-finite scores tie for last."""
    return rankdata(finite_or_last(scores), method="average")


def mean_rank_vote(table: Mapping[str, Sequence[float]], members: Sequence[str] | None = None) -> np.ndarray:
    """The mean rank of each candidate over ``members`` (default: every column of ``table``); higher is
    better."""
    members = list(members or table)
    missing = [m for m in members if m not in table]
    if missing:
        raise EdgenasError(f"ensemble member '{missing[0]}' was not scored (scored: {', '.join(table)})")
    if not members:
        raise EdgenasError("an ensemble needs at least one member proxy")
    return np.mean([ranks(table[m]) for m in members], axis=0)


def percentile_vote(scores: Mapping[str, float], reference: Mapping[str, Sequence[float]]) -> float:
    """The mean over members of the fraction of a reference sample that each member's score beats (ties count
    half): the mean-rank vote of one candidate against a fixed reference set, comparable across calls."""
    values = []
    for name, s in scores.items():
        ref = finite_or_last(reference[name])
        if not np.isfinite(s):
            values.append(0.0)
            continue
        ref_raw = np.asarray(reference[name], dtype=np.float64)
        below = np.sum(~np.isfinite(ref_raw)) + np.sum((ref < s) & np.isfinite(ref_raw))
        ties = np.sum(ref == s)
        values.append(float(below + 0.5 * ties) / len(ref))
    return float(np.mean(values))
