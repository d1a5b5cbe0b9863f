"""Small regressors with a safe, pickle-free serialisation (numpy arrays), for the latency predictors.

Each follows the scikit-learn estimator convention (parameters in ``__init__``, ``fit(X, y,
sample_weight)``, ``predict(X)``, learned attributes ending in ``_``) and adds ``to_arrays()`` /
``from_arrays(params, arrays)``, so a fitted model is saved as plain arrays in an ``.npz`` and loaded
with ``allow_pickle=False``. scikit-learn does the fitting; prediction is our own numpy code over the
exported arrays, so a saved model does not depend on scikit-learn's private classes or version:

- :class:`RobustLinear`: ridge regression with Huber weights (iteratively reweighted least squares;
  Huber, "Robust estimation of a location parameter", 1964).
- :class:`BoostedTrees`: gradient-boosted regression trees (Friedman, "Greedy function approximation",
  2001) fitted by :class:`sklearn.ensemble.GradientBoostingRegressor` with the Huber loss; its trees are
  exported as padded node arrays and evaluated for all trees and rows at once.
- :class:`MLP`: a multilayer perceptron (ReLU) fitted by :class:`sklearn.neural_network.MLPRegressor`
  (L-BFGS), exported as its weight matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def huber_weights(residuals: np.ndarray, delta: float = 1.345) -> np.ndarray:
    """IRLS weights of the Huber loss: 1 inside ``delta`` robust standard deviations, ``delta*s/|r|`` beyond.
    The scale ``s`` is the normalised median absolute deviation of the residuals."""
    r = np.asarray(residuals, dtype=np.float64)
    scale = 1.4826 * np.median(np.abs(r - np.median(r)))
    if not np.isfinite(scale) or scale <= 0:
        return np.ones_like(r)
    u = np.abs(r - np.median(r)) / (delta * scale)
    return np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))


class _Standardise:
    """Column standardisation learned on the training features (constant columns left at zero)."""

    def fit(self, X: np.ndarray) -> _Standardise:
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_


class RobustLinear:
    """Ridge regression on standardised features with Huber IRLS weights (``robust_iter`` rounds)."""

    kind = "linear"

    def __init__(self, alpha: float = 1.0, delta: float = 1.345, robust_iter: int = 10) -> None:
        self.alpha, self.delta, self.robust_iter = alpha, delta, robust_iter

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "delta": self.delta, "robust_iter": self.robust_iter}

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> RobustLinear:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        std = _Standardise().fit(X)
        Z = std.transform(X)
        base_w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        w = base_w.copy()
        coef, intercept = np.zeros(Z.shape[1]), float(np.average(y, weights=w))
        for _ in range(max(1, self.robust_iter)):
            coef, intercept = self._solve(Z, y, w)
            new_w = base_w * huber_weights(y - Z @ coef - intercept, self.delta)
            if np.allclose(new_w, w, atol=1e-4):
                break
            w = new_w
        self.mean_, self.scale_, self.coef_, self.intercept_ = std.mean_, std.scale_, coef, intercept
        self.weights_ = w
        return self

    def _solve(self, Z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
        sw = w / w.sum()
        zm, ym = sw @ Z, float(sw @ y)
        Zc, yc = Z - zm, y - ym
        A = Zc.T @ (Zc * w[:, None]) + self.alpha * np.eye(Z.shape[1])
        coef = np.linalg.solve(A, Zc.T @ (yc * w))
        return coef, ym - float(zm @ coef)

    def predict(self, X: np.ndarray) -> np.ndarray:
        # ((X - mean) / scale) @ coef + intercept, with the standardisation folded into the weights
        w = self.coef_ / self.scale_
        return np.asarray(X, dtype=np.float64) @ w + (self.intercept_ - float(self.mean_ @ w))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": np.array(self.intercept_)}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RobustLinear:
        m = cls(**params)
        m.mean_, m.scale_, m.coef_ = arrays["mean"], arrays["scale"], arrays["coef"]
        m.intercept_ = float(arrays["intercept"])
        return m


class BoostedTrees:
    """Gradient-boosted trees (Huber loss) with numpy prediction over padded, complete binary trees.

    After fitting, every tree is rewritten as a complete binary tree of depth ``max_depth`` (a leaf
    above the bottom is copied down with an always-left split), so prediction is ``max_depth`` vectorised
    steps ``node = 2 * node + 1 + (x[feature] > threshold)`` over all trees and rows at once.
    """

    kind = "gbt"

    def __init__(self, n_estimators: int = 100, max_depth: int = 3, learning_rate: float = 0.1,
                 subsample: float = 0.8, max_features: float = 0.5, huber_alpha: float = 0.9,
                 random_state: int = 0) -> None:
        self.n_estimators, self.max_depth, self.learning_rate = n_estimators, max_depth, learning_rate
        self.subsample, self.max_features, self.huber_alpha = subsample, max_features, huber_alpha
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("n_estimators", "max_depth", "learning_rate", "subsample",
                                               "max_features", "huber_alpha", "random_state")}

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> BoostedTrees:
        from sklearn.ensemble import GradientBoostingRegressor

        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        gbr = GradientBoostingRegressor(
            loss="huber", alpha=self.huber_alpha, n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, subsample=self.subsample, max_features=self.max_features,
            random_state=self.random_state,
        ).fit(X, y, sample_weight=sample_weight)
        D = self.max_depth
        n_inner, n_leaf = 2**D - 1, 2**D
        T = len(gbr.estimators_)
        feature = np.zeros((T, n_inner), dtype=np.int32)
        threshold = np.full((T, n_inner), np.inf)
        leaf = np.zeros((T, n_leaf))
        for t, est in enumerate(gbr.estimators_[:, 0]):
            tree = est.tree_
            self._pad(tree, 0, 0, 0, feature[t], threshold[t], leaf[t], D)
        self.feature_, self.threshold_ = feature, threshold
        self.leaf_ = leaf * self.learning_rate
        # The initial (constant) prediction: whatever gbr adds beyond the trees.
        self.init_ = float(np.median(gbr.predict(X[:64]) - self._trees_sum(X[:64])))
        return self

    def _pad(self, tree: Any, node: int, pos: int, depth: int, feature: np.ndarray, threshold: np.ndarray,
             leaf: np.ndarray, D: int) -> None:
        """Copy sklearn node ``node`` to complete-tree position ``pos`` (inner nodes 0..2^D-2)."""
        if depth == D:
            leaf[pos - (2**D - 1)] = tree.value[node].ravel()[0]
            return
        left, right = tree.children_left[node], tree.children_right[node]
        if left == -1:  # a leaf above the bottom: always go left, and copy it into both subtrees
            feature[pos], threshold[pos] = 0, np.inf
            self._pad(tree, node, 2 * pos + 1, depth + 1, feature, threshold, leaf, D)
            self._pad(tree, node, 2 * pos + 2, depth + 1, feature, threshold, leaf, D)
            return
        feature[pos], threshold[pos] = tree.feature[node], tree.threshold[node]
        self._pad(tree, left, 2 * pos + 1, depth + 1, feature, threshold, leaf, D)
        self._pad(tree, right, 2 * pos + 2, depth + 1, feature, threshold, leaf, D)

    def _trees_sum(self, X: np.ndarray) -> np.ndarray:
        """Sum of all trees' leaves. The trees are complete, so a row's position at the next level is
        ``2 pos + 1 + (x[feature] > threshold)`` (heap order). Features are rounded to float32 first, as
        scikit-learn's trees see them. Many rows: tree by tree, all rows at once; a few rows: all trees
        at once (no per-tree Python)."""
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        offset = self.feature_.shape[1]  # inner nodes per tree: the leaves follow them in heap order
        if len(X) < 64:
            trees = np.arange(self.feature_.shape[0])
            pos = np.zeros((len(X), len(trees)), dtype=np.intp)
            for _ in range(self.max_depth):
                f, t = self.feature_[trees, pos], self.threshold_[trees, pos]
                pos = 2 * pos + 1 + (np.take_along_axis(X, f, axis=1) > t)
            return self.leaf_[trees, pos - offset].sum(axis=1)
        XT = np.ascontiguousarray(X.T)  # (features, rows): a root's feature is one contiguous row
        rows = np.arange(XT.shape[1])
        out = np.zeros(XT.shape[1])
        for feature, threshold, leaf in zip(self.feature_, self.threshold_, self.leaf_, strict=True):
            pos = (XT[feature[0]] > threshold[0]).astype(np.intp) + 1
            for _ in range(1, self.max_depth):
                pos = 2 * pos + 1 + (XT[feature[pos], rows] > threshold[pos])
            out += leaf[pos - offset]
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.init_ + self._trees_sum(X)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"feature": self.feature_, "threshold": self.threshold_, "leaf": self.leaf_,
                "init": np.array(self.init_)}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BoostedTrees:
        m = cls(**params)
        m.feature_, m.threshold_, m.leaf_ = arrays["feature"], arrays["threshold"], arrays["leaf"]
        m.init_ = float(arrays["init"])
        if m.feature_.shape[1] != 2**m.max_depth - 1:
            raise ValueError("tree arrays do not match max_depth")
        return m


class MLP:
    """A ReLU multilayer perceptron on standardised features (scikit-learn's L-BFGS fit, L2 ``alpha``)."""

    kind = "mlp"

    def __init__(self, hidden: tuple[int, ...] = (32,), alpha: float = 1.0, max_iter: int = 200,
                 random_state: int = 0) -> None:
        self.hidden, self.alpha, self.max_iter, self.random_state = tuple(hidden), alpha, max_iter, random_state

    def get_params(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "alpha": self.alpha, "max_iter": self.max_iter,
                "random_state": self.random_state}

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MLP:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        std = _Standardise().fit(X)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std() or 1.0)
        net = MLPRegressor(hidden_layer_sizes=self.hidden, alpha=self.alpha, solver="lbfgs",
                           max_iter=self.max_iter, random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            net.fit(std.transform(X), (y - self.y_mean_) / self.y_scale_, sample_weight=sample_weight)
        self.mean_, self.scale_ = std.mean_, std.scale_
        self.coefs_ = [np.asarray(c) for c in net.coefs_]
        self.intercepts_ = [np.asarray(b) for b in net.intercepts_]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        h = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            h = h @ W + b
            if i < len(self.coefs_) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * self.y_scale_ + self.y_mean_

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean_, "scale": self.scale_, "y": np.array([self.y_mean_, self.y_scale_])}
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            out[f"W{i}"], out[f"b{i}"] = W, b
        return out

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> MLP:
        params = {**params, "hidden": tuple(params.get("hidden", (32,)))}
        m = cls(**params)
        m.mean_, m.scale_ = arrays["mean"], arrays["scale"]
        m.y_mean_, m.y_scale_ = (float(v) for v in arrays["y"])
        n = len(m.hidden) + 1
        m.coefs_ = [arrays[f"W{i}"] for i in range(n)]
        m.intercepts_ = [arrays[f"b{i}"] for i in range(n)]
        return m


REGRESSORS: dict[str, type] = {"linear": RobustLinear, "gbt": BoostedTrees, "mlp": MLP}
