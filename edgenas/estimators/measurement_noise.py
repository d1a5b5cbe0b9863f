"""How much of an accuracy predictor's rank correlation the measured accuracies themselves allow.

A predictor is judged against accuracies measured on a finite validation set: each subnet's measured
accuracy is its expected accuracy plus the luck of *these* images. When the subnets' accuracies are close
together, that luck reorders them, and no predictor -- not even one that knew every expected accuracy --
can rank them better than the measurements agree with themselves.

Classical test theory's split-half method estimates that agreement from the per-image results alone:
split the validation images into two random halves, correlate the subnets' accuracies on one half with
those on the other (averaged over many splits), and project that half-length reliability ``r`` to the full
set with the Spearman-Brown formula ``R = 2r / (1 + r)`` (Spearman 1910; Brown 1910). A perfect predictor
of the expected accuracy then correlates with the full-set measurements at about ``sqrt(R)``: the ceiling.
The rank (Spearman) form is the one the OFA predictor target uses; the Pearson form is reported beside it.
Subnets of one supernet share their mistakes, so the noise is smaller than the binomial
``sqrt(p (1 - p) / n)``; it is estimated here from the halves' differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import pearsonr, spearmanr

from edgenas.errors import EdgenasError


@dataclass(frozen=True)
class MeasurementNoise:
    """Split-half figures of the accuracies of several models on the same validation images."""

    models: int
    images: int
    splits: int
    split_half_spearman: float
    split_half_pearson: float
    ceiling_spearman: float  # sqrt of the Spearman-Brown projection of split_half_spearman
    ceiling_pearson: float
    noise_sd_points: float  # standard deviation of one full-set accuracy around the model's expectation
    binomial_sd_points: float  # what independent mistakes would give, for comparison

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def _ceiling(half: float) -> float:
    full = 2 * half / (1 + half) if half > -1 else -1.0
    return float(np.sqrt(full)) if full > 0 else 0.0


def split_half_noise(hits: np.ndarray, splits: int = 200, seed: int = 0) -> MeasurementNoise:
    """:class:`MeasurementNoise` of a ``(models, images)`` boolean matrix (which image each model gets
    right), over ``splits`` random halvings of the images (seeded)."""
    hits = np.asarray(hits, dtype=np.float64)
    if hits.ndim != 2 or hits.shape[0] < 3 or hits.shape[1] < 4:
        raise EdgenasError(f"measurement noise needs per-image results of at least 3 models on at least 4 images; "
                           f"got an array of shape {hits.shape}")
    if splits < 1:
        raise EdgenasError(f"splits must be >= 1, got {splits}")
    n_models, n = hits.shape
    rng = np.random.default_rng(seed)
    rs, rp, var_diff = [], [], []
    for _ in range(splits):
        perm = rng.permutation(n)
        a, b = hits[:, perm[: n // 2]].mean(1), hits[:, perm[n // 2 : 2 * (n // 2)]].mean(1)
        if np.ptp(a) == 0 or np.ptp(b) == 0:  # every model equal on a half: no ranking to agree on
            rs.append(0.0)
            rp.append(0.0)
        else:
            rs.append(float(spearmanr(a, b)[0]))
            rp.append(float(pearsonr(a, b)[0]))
        var_diff.append(float(np.var(a - b)))
    half_s, half_p = float(np.mean(rs)), float(np.mean(rp))
    p = float(hits.mean())
    return MeasurementNoise(
        models=n_models, images=n, splits=splits, split_half_spearman=half_s, split_half_pearson=half_p,
        ceiling_spearman=_ceiling(half_s), ceiling_pearson=_ceiling(half_p),
        # a - b has twice the variance of one half's accuracy, which has twice that of the full set's
        noise_sd_points=float(100 * np.sqrt(np.mean(var_diff)) / 2),
        binomial_sd_points=float(100 * np.sqrt(p * (1 - p) / n)),
    )
