"""Network-wise latency predictors: learn latency from (architecture, measured latency) pairs.

The approach of BRP-NAS / HELP / nn-Meter's network-level baselines: features of the architecture (its
one-hot encoding plus derived costs, see :mod:`edgenas.hardware.features`) -> a regressor of
log-latency. Choices made here, and why:

- **log target**: latencies span several-fold and the fidelity that matters is relative (±10 %);
- **robust fit**: measured latencies carry drift (runs of slow measurements, see the OFA GPU data), so
  every model is fitted with Huber weights (IRLS; Huber 1964) and the trees with the Huber loss, and
  the slow rows stop pulling the fit;
- **linear base + non-linear residual**: ``gbt`` and ``mlp`` fit the residual of a robust ridge
  regression, which carries the (mostly additive) bulk of the signal; with a few hundred to a thousand
  training archs this is far more stable than a tree ensemble or network on its own. How much of the
  residual model to keep (``blend_`` in [0, 1]) is chosen on out-of-fold predictions, so a residual
  model that only learned noise is shrunk away instead of hurting (stacking, Wolpert 1992);
- **offset**: ``offset="window"`` shifts the log-prediction by the constant that maximises the share of
  *out-of-fold* predictions within ``±tolerance`` (the densest ``±tol`` window of the residuals; the
  smallest such move from the median), which is the right centre when the error distribution is skewed
  (a right tail of slow measurements); ``"median"`` uses the median out-of-fold residual, ``"none"`` no
  shift.

A fitted predictor is saved to one ``.npz`` (arrays plus a JSON metadata string, no pickle) with the
space it was trained for; loading it for another space is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.hardware.features import Features
from edgenas.hardware.regressors import REGRESSORS, RobustLinear, huber_weights
from edgenas.io import load_arrays, save_arrays
from edgenas.spaces.base import SearchSpace

FORMAT = "edgenas-latency-predictor/1"
MODELS = ("linear", "gbt", "mlp")
OFFSETS = ("window", "median", "none")


def window_offset(residuals: np.ndarray, tolerance: float = 0.10, slack: float = 0.002) -> float:
    """The shift ``c`` that maximises the share of ``exp(r - c) - 1`` within ``±tolerance`` (log residuals
    ``r``). The share is often flat over a range of shifts (every clean row inside); among the shifts
    within ``slack`` (a share) of the best, the one closest to the median residual is taken, so the
    offset moves the prediction only as far as the hit rate asks."""
    r = np.asarray(residuals, dtype=np.float64)
    lo, hi = np.log(1 - tolerance), np.log(1 + tolerance)
    grid = np.arange(-0.3, 0.3001, 0.001)
    sr = np.sort(r)
    share = (np.searchsorted(sr, grid + hi, side="right") - np.searchsorted(sr, grid + lo, side="left")) / len(r)
    good = grid[share >= share.max() - slack]
    return float(good[np.argmin(np.abs(good - np.median(r)))])


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit the BLAS / OpenMP thread pools to ``n`` inside the block (restored afterwards).

    The pools are found once per process (threadpoolctl scans the loaded libraries, which takes
    milliseconds); each use then only sets and restores their thread counts."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=n):
        yield


_CONTROLLER: Any = None  # the process's thread-pool controller, found on first use


def _robust_blend(base_residual: np.ndarray, correction: np.ndarray) -> float:
    """The share ``lam`` in [0, 1] of a residual model's out-of-fold correction that minimises the Huber
    loss of ``base_residual - lam * correction`` (scale: MAD of the base residual)."""
    scale = 1.4826 * np.median(np.abs(base_residual - np.median(base_residual))) or 1e-9
    delta = 1.345 * scale

    def huber(r: np.ndarray) -> float:
        a = np.abs(r - np.median(r))
        return float(np.mean(np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))))

    grid = np.linspace(0.0, 1.0, 21)
    return float(grid[int(np.argmin([huber(base_residual - g * correction) for g in grid]))])


class LatencyPredictor:
    """A latency predictor for one space (scikit-learn style: parameters here, ``fit``/``predict``).

    Parameters
    ----------
    space: the search space of the architectures.
    model: ``linear`` (robust ridge), ``gbt`` (robust ridge + gradient-boosted trees on its residual) or
        ``mlp`` (robust ridge + MLP on its residual).
    num_classes, in_channels: of the networks (MBV3 derived features depend on them).
    lut: an optional bound latency table (:class:`edgenas.hardware.lut.LutModel`); its sums become
        features and are saved with the predictor.
    offset, tolerance, folds: the out-of-fold offset (see the module docstring).
    robust_rounds: IRLS rounds of Huber re-weighting of the whole model.
    model_params: passed to the regressor (see :mod:`edgenas.hardware.regressors`).
    threads: BLAS threads while fitting and predicting (the matrices are small: more threads only
        contend, badly so on a shared machine).
    """

    def __init__(self, space: SearchSpace, model: str = "gbt", num_classes: int = 10, in_channels: int = 3,
                 lut: Any = None, offset: str = "window", tolerance: float = 0.10, folds: int = 5,
                 robust_rounds: int = 2, random_state: int = 0, model_params: dict[str, Any] | None = None,
                 threads: int = 1) -> None:
        if model not in MODELS:
            raise EdgenasError(f"unknown predictor model '{model}'; valid: {', '.join(MODELS)}")
        if offset not in OFFSETS:
            raise EdgenasError(f"unknown offset '{offset}'; valid: {', '.join(OFFSETS)}")
        self.space, self.model, self.num_classes, self.in_channels = space, model, num_classes, in_channels
        self.lut, self.offset, self.tolerance, self.folds = lut, offset, tolerance, folds
        self.robust_rounds, self.random_state = robust_rounds, random_state
        self.model_params = dict(model_params or {})
        self.threads = threads

    # ------------------------------------------------------------------ fit
    def _features(self) -> Features:
        if self.lut is not None:
            cal = self.lut.table.calibration
            return Features(self.space, self.num_classes, self.in_channels, lut_values=self.lut.values,
                            lut_calibration=(cal.a, cal.b, cal.c))
        return Features(self.space, self.num_classes, self.in_channels)

    def _fit_core(self, X: np.ndarray, y: np.ndarray, rounds: int | None = None) -> tuple[RobustLinear, Any]:
        alpha = self.model_params.get("alpha_linear", 1.0)
        if self.model == "linear":  # IRLS to convergence inside the ridge itself
            return RobustLinear(alpha=alpha, robust_iter=20).fit(X, y), None
        params = {k: v for k, v in self.model_params.items() if k != "alpha_linear"}
        params.setdefault("random_state", self.random_state)
        w = np.ones(len(y))
        base, resid_model = RobustLinear(alpha=alpha), None
        rounds = self.robust_rounds if rounds is None else rounds
        for _ in range(rounds + 1):  # IRLS on the whole model: refit with Huber weights
            base = RobustLinear(alpha=alpha, robust_iter=1).fit(X, y, w)
            pred = base.predict(X)
            resid_model = REGRESSORS[self.model](**params).fit(X, y - pred, sample_weight=w)
            w = huber_weights(y - pred - resid_model.predict(X))
        return base, resid_model

    @staticmethod
    def _predict_core(base: RobustLinear, resid_model: Any, X: np.ndarray, blend: float = 1.0) -> np.ndarray:
        p = base.predict(X)
        return p + blend * resid_model.predict(X) if resid_model is not None and blend else p

    def fit(self, archs: Sequence[Mapping[str, Any]], latency_ms: Sequence[float]) -> LatencyPredictor:
        with blas_threads(self.threads):
            return self._fit(archs, latency_ms)

    def _fit(self, archs: Sequence[Mapping[str, Any]], latency_ms: Sequence[float]) -> LatencyPredictor:
        y_ms = np.asarray(latency_ms, dtype=np.float64)
        if len(archs) != len(y_ms):
            raise EdgenasError(f"{len(archs)} architectures but {len(y_ms)} latencies")
        if len(y_ms) < 10:
            raise EdgenasError(f"a latency predictor needs at least 10 measured architectures, got {len(y_ms)}")
        if not np.all(np.isfinite(y_ms)) or np.any(y_ms <= 0):
            raise EdgenasError("latencies must be positive finite numbers (ms)")
        self.features_ = self._features()
        X = self.features_.transform(archs)
        y = np.log(y_ms)
        self.base_, self.resid_ = self._fit_core(X, y)
        # Out-of-fold predictions: they choose how much of the non-linear residual model to keep
        # (``blend_``, 0..1, so that a residual model that only fits noise is shrunk away) and the offset.
        oof_base, oof_resid = np.full(len(y), np.nan), np.zeros(len(y))
        if self.folds >= 2:
            rng = np.random.default_rng(self.random_state)
            fold = rng.permutation(len(y)) % self.folds
            for f in range(self.folds):
                tr, te = fold != f, fold == f
                b, r = self._fit_core(X[tr], y[tr], min(1, self.robust_rounds))
                oof_base[te] = b.predict(X[te])
                if r is not None:
                    oof_resid[te] = r.predict(X[te])
        self.blend_ = 1.0
        if self.resid_ is not None and np.isfinite(oof_base).all():
            self.blend_ = _robust_blend(y - oof_base, oof_resid)
        oof = y - oof_base - self.blend_ * oof_resid
        if self.offset == "window" and np.isfinite(oof).all():
            self.offset_ = window_offset(oof, self.tolerance)
        elif self.offset == "median" and np.isfinite(oof).all():
            self.offset_ = float(np.median(oof))
        else:
            self.offset_ = 0.0
        self.oof_residuals_ = oof
        self.n_train_ = len(y)
        return self

    # -------------------------------------------------------------- predict
    def predict(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predicted latency (ms) of each architecture."""
        if not hasattr(self, "base_"):
            raise EdgenasError("this latency predictor is not fitted yet")
        return self._predict_features(self.features_.transform(archs))

    def predict_codes(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted latency (ms) from choice indices (:meth:`edgenas.hardware.layers.MBV3Layers.batch_codes`)
        instead of arch dicts: the vectorised path of searches that keep their population as index matrices
        (no per-architecture Python)."""
        if not hasattr(self, "base_"):
            raise EdgenasError("this latency predictor is not fitted yet")
        return self._predict_features(self.features_.transform_codes(codes))

    def _predict_features(self, X: np.ndarray) -> np.ndarray:
        with blas_threads(self.threads):
            return np.exp(self._predict_core(self.base_, self.resid_, X, self.blend_) + self.offset_)

    # ---------------------------------------------------------------- I/O
    def _meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "space": self.space.name, "space_config": self.space.to_dict(),
            "model": self.model, "num_classes": self.num_classes, "in_channels": self.in_channels,
            "offset": self.offset, "tolerance": self.tolerance, "folds": self.folds,
            "robust_rounds": self.robust_rounds, "random_state": self.random_state,
            "model_params": self.model_params, "offset_": self.offset_, "n_train_": self.n_train_,
            "blend_": self.blend_,
            "base_params": self.base_.get_params(),
            "resid_params": self.resid_.get_params() if self.resid_ is not None else None,
            "features": self.features_.names, "has_lut": self.features_.lut_values is not None,
            "unit": "ms", "info": getattr(self, "info_", {}),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``path`` (``.npz``: arrays and a JSON metadata string; nothing pickled), atomically."""
        arrays: dict[str, np.ndarray] = {f"base.{k}": v for k, v in self.base_.to_arrays().items()}
        if self.resid_ is not None:
            arrays.update({f"resid.{k}": v for k, v in self.resid_.to_arrays().items()})
        if self.features_.lut_values is not None:
            arrays["lut.values"] = self.features_.lut_values
            arrays["lut.calibration"] = self.features_.lut_calibration
        save_arrays(path, self._meta(), arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], space: SearchSpace | None = None) -> LatencyPredictor:
        """Read a saved predictor; ``space`` (if given) must be the one it was trained for."""
        meta, arrays = load_arrays(path, "latency predictor", FORMAT, "fit it again with 'edgenas latency fit'")
        from edgenas.spaces import get_space

        if space is None:
            space = get_space(meta["space"])
        if json.dumps(space.to_dict(), sort_keys=True) != json.dumps(meta["space_config"], sort_keys=True):
            raise EdgenasError(
                f"latency predictor '{path}' was trained for space '{meta['space']}', not for space "
                f"'{space.name}' (or a differently configured one); fit one for this space"
            )
        try:
            pred = cls(space, meta["model"], meta["num_classes"], meta["in_channels"], None, meta["offset"],
                       meta["tolerance"], meta["folds"], meta["robust_rounds"], meta["random_state"],
                       meta["model_params"])
            lut_values = arrays.get("lut.values")
            pred.features_ = Features(space, meta["num_classes"], meta["in_channels"], lut_values=lut_values,
                                      lut_calibration=arrays.get("lut.calibration"))
            if pred.features_.names != meta["features"]:
                raise ValueError("feature names differ")
            pred.base_ = RobustLinear.from_arrays(meta["base_params"], _strip(arrays, "base."))
            pred.resid_ = None
            if meta["resid_params"] is not None:
                pred.resid_ = REGRESSORS[meta["model"]].from_arrays(meta["resid_params"], _strip(arrays, "resid."))
            pred.offset_, pred.n_train_ = float(meta["offset_"]), int(meta["n_train_"])
            pred.blend_ = float(meta["blend_"])
            pred.info_ = meta.get("info", {})
        except (KeyError, ValueError, TypeError) as exc:
            raise EdgenasError(f"latency predictor '{path}' is malformed ({exc}); fit it again") from None
        return pred


def _strip(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
