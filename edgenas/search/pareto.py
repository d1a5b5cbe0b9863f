"""Pareto utilities: non-dominated filtering and the 2-D hypervolume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_minimization(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Flip the sign of maximised columns so that every column is minimised."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(points, dtype=float) * signs


def pareto_mask(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows (duplicates of a front point are all kept)."""
    p = to_minimization(points, directions)
    n = len(p)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        dominated = np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


def hypervolume_2d(points: np.ndarray, reference: Sequence[float], directions: Sequence[str]) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (both objectives, any directions)."""
    p = to_minimization(points, directions)
    ref = to_minimization(np.asarray([reference]), directions)[0]
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[pareto_mask(p, ["minimize", "minimize"])]
    p = p[np.argsort(p[:, 0])]
    area, prev_y = 0.0, ref[1]
    for x, y in p:
        if y < prev_y:
            area += (ref[0] - x) * (prev_y - y)
            prev_y = y
    return float(area)
