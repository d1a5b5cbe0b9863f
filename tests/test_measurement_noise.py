"""Split-half measurement noise of accuracies on a shared validation set (edgenas.estimators.measurement_noise)."""

from __future__ import annotations

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.estimators.measurement_noise import split_half_noise


def test_equal_models_leave_nothing_to_rank():
    """Models with the same expected accuracy and independent mistakes: the halves do not agree on an
    order, the ceiling is low, and the noise is binomial."""
    rng = np.random.default_rng(0)
    hits = rng.random((40, 2000)) < 0.6
    noise = split_half_noise(hits, splits=50)
    assert abs(noise.split_half_spearman) < 0.15
    assert noise.ceiling_spearman < 0.5
    assert noise.noise_sd_points == pytest.approx(noise.binomial_sd_points, rel=0.25)
    assert noise.binomial_sd_points == pytest.approx(100 * np.sqrt(0.6 * 0.4 / 2000), rel=0.05)


def test_well_separated_models_rank_reliably():
    rng = np.random.default_rng(1)
    p = np.linspace(0.3, 0.8, 30)[:, None]
    hits = rng.random((30, 4000)) < p
    noise = split_half_noise(hits, splits=50)
    assert noise.split_half_spearman > 0.9 and noise.ceiling_spearman > 0.95
    assert noise.models == 30 and noise.images == 4000


def test_shared_mistakes_mean_less_noise_than_binomial():
    """Models that mostly fail on the same images (as subnets of one supernet do) measure with less noise
    than independent draws would."""
    rng = np.random.default_rng(2)
    hard = rng.random(2000) < 0.4  # images every model tends to get wrong
    flips = rng.random((20, 2000)) < 0.05
    hits = ~hard[None, :] ^ flips
    noise = split_half_noise(hits, splits=50)
    assert noise.noise_sd_points < 0.6 * noise.binomial_sd_points


def test_noise_ceiling_bounds_a_perfect_predictor():
    """The ceiling is close to the Spearman correlation between the expected accuracies and the measured
    ones (what a perfect predictor would reach)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    p = rng.normal(0.35, 0.015, 200).clip(0.01, 0.99)[:, None]
    hits = rng.random((200, 2000)) < p
    noise = split_half_noise(hits, splits=100)
    perfect = spearmanr(p[:, 0], hits.mean(1))[0]
    assert noise.ceiling_spearman == pytest.approx(perfect, abs=0.06)


@pytest.mark.parametrize("shape", [(2, 100), (10, 3), (10,)])
def test_too_little_data_is_a_clear_error(shape):
    with pytest.raises(EdgenasError, match="at least 3 models on at least 4 images"):
        split_half_noise(np.ones(shape, dtype=bool))
