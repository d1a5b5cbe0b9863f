"""An accuracy predictor for the subnets of an OFA supernet, and the integer gene encoding it reads.

Once-for-All (Cai et al., ICLR 2020), section 3.4: accuracy is predicted from the architecture encoding
(one-hot kernel and expand ratio per block slot, zeros for slots the depth skips, one-hot resolution) by a
small MLP trained on (subnet, measured accuracy) pairs sampled from the supernet, so that the
evolutionary search can score thousands of candidates per second without touching the network.

- :class:`GeneCodec`: an architecture of an MBV3 space as a row of small integers (the choice index of
  every dimension), the form in which :mod:`edgenas.search.ofa_evolution` keeps a whole population in one
  numpy matrix; ``features(genes)`` is the one-hot encoding above (plus width and depth one-hots),
  computed for all rows at once.
- :class:`AccuracyPredictor`: scikit-learn style (parameters in ``__init__``, ``fit``, ``predict``,
  learned attributes ending in ``_``). A robust baseline (ridge regression on the one-hot features)
  carries the additive bulk; an ensemble of small MLPs (trained with PyTorch) fits what is left. Predicting
  is plain numpy matrix products. Saved as one ``.npz`` (arrays + a JSON metadata string; loaded with
  ``allow_pickle=False``) that names the space it was trained for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.io import load_arrays, save_arrays
from edgenas.spaces.base import Arch
from edgenas.spaces.mbv3 import MBV3Space

FORMAT = "edgenas-accuracy-predictor/1"


class GeneCodec:
    """Architectures of an MBV3 space <-> integer gene rows ``[r, w, d_1..d_S, k_11..k_SM, e_11..e_SM]``."""

    def __init__(self, space: MBV3Space) -> None:
        if not isinstance(space, MBV3Space):
            raise EdgenasError(f"the OFA gene encoding needs an MBV3-style space; '{space.name}' is not one")
        self.space = space
        cfg = space.mbv3
        self.S, self.M = cfg.num_stages, cfg.max_depth
        S, M = self.S, self.M
        self.names = ["resolution", "width"] + [f"s{s}.depth" for s in range(1, S + 1)]
        self.names += [f"s{s}.b{j}.kernel" for s in range(1, S + 1) for j in range(1, M + 1)]
        self.names += [f"s{s}.b{j}.expand" for s in range(1, S + 1) for j in range(1, M + 1)]
        self.choices = [tuple(space[n].choices) for n in self.names]
        self.n_choices = np.array([len(c) for c in self.choices], dtype=np.int64)
        self.G = len(self.names)
        self.depth_values = np.asarray(cfg.depths, dtype=np.int64)
        self.sl_d = slice(2, 2 + S)
        self.sl_k = slice(2 + S, 2 + S + S * M)
        self.sl_e = slice(2 + S + S * M, 2 + S + 2 * S * M)
        # one-hot offsets of every gene
        self.offsets = np.concatenate([[0], np.cumsum(self.n_choices)[:-1]])
        self.n_features = int(self.n_choices.sum())

    # ------------------------------------------------------------ conversions
    def to_genes(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.zeros((len(archs), self.G), dtype=np.int64)
        for row, arch in enumerate(archs):
            canon = self.space.validate(arch)
            for g, (name, choices) in enumerate(zip(self.names, self.choices, strict=True)):
                out[row, g] = choices.index(canon[name])
        return out

    def to_archs(self, genes: np.ndarray) -> list[Arch]:
        archs = []
        for row in np.atleast_2d(genes):
            arch = {name: choices[int(i)] for name, choices, i in zip(self.names, self.choices, row, strict=True)}
            archs.append(self.space.validate(arch))
        return archs

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniformly random gene rows."""
        return (rng.random((n, self.G)) * self.n_choices).astype(np.int64)

    def smallest(self) -> np.ndarray:
        return np.zeros(self.G, dtype=np.int64)

    def active(self, genes: np.ndarray) -> np.ndarray:
        """``(n, S*M)`` booleans: which block slots the depths use."""
        depth = self.depth_values[genes[:, self.sl_d]]
        return (np.arange(self.M)[None, None, :] < depth[:, :, None]).reshape(len(genes), self.S * self.M)

    def features(self, genes: np.ndarray) -> np.ndarray:
        """One-hot features of every row (kernel / expand one-hots zero in slots the depth skips)."""
        return self.padded_features(genes)[:, : self.n_features]

    def hot_columns(self, genes: np.ndarray) -> np.ndarray:
        """``(n, G)`` column of each gene's one in :meth:`padded_features` (skipped slots: the last column)."""
        genes = np.atleast_2d(genes)
        cols = self.offsets[None, :] + genes
        act = self.active(genes)
        cols[:, self.sl_k] = np.where(act, cols[:, self.sl_k], self.n_features)
        cols[:, self.sl_e] = np.where(act, cols[:, self.sl_e], self.n_features)
        return cols

    def padded_features(self, genes: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """:meth:`features` with one extra last column that collects the skipped slots' ones (multiply it
        by a zero weight row): one scatter, no boolean masking (the finder's hot path)."""
        cols = self.hot_columns(genes)
        n, width = len(cols), self.n_features + 1
        hot = np.zeros((n, width), dtype=dtype)
        np.put(hot, cols + (np.arange(n) * width)[:, None], 1.0)
        return hot

    def lut_codes(self, genes: np.ndarray) -> dict[str, np.ndarray]:
        """The choice-index dict of :meth:`edgenas.hardware.layers.MBV3Layers.batch_codes` (no dicts built)."""
        n, S, M = len(genes), self.S, self.M
        d = genes[:, self.sl_d]
        return {"r": genes[:, 0], "w": genes[:, 1], "d": d, "depth": self.depth_values[d],
                "k": genes[:, self.sl_k].reshape(n, S, M), "e": genes[:, self.sl_e].reshape(n, S, M)}

    def canonical(self, genes: np.ndarray) -> np.ndarray:
        """Rows with the genes of skipped slots set to 0 (so equal subnets have equal rows)."""
        g = genes.copy()
        act = self.active(g)
        g[:, self.sl_k] = np.where(act, g[:, self.sl_k], 0)
        g[:, self.sl_e] = np.where(act, g[:, self.sl_e], 0)
        return g


class AccuracyPredictor:
    """Ridge baseline + MLP-ensemble residual on the one-hot gene features (see the module docstring).

    Parameters: ``hidden`` (units per hidden layer), ``layers`` (hidden layers), ``ensemble`` (MLPs
    averaged), ``epochs`` (full-batch Adam steps), ``lr``, ``weight_decay``, ``ridge`` (L2 of the baseline),
    ``random_state``.
    """

    def __init__(self, space: MBV3Space, hidden: int = 32, layers: int = 2, ensemble: int = 3,
                 epochs: int = 1500, lr: float = 1e-3, weight_decay: float = 1e-4, ridge: float = 1.0,
                 random_state: int = 0) -> None:
        self.space, self.hidden, self.layers, self.ensemble = space, hidden, layers, ensemble
        self.epochs, self.lr, self.weight_decay, self.ridge = epochs, lr, weight_decay, ridge
        self.random_state = random_state
        self.codec = GeneCodec(space)

    def _genes(self, X: Sequence[Mapping[str, Any]] | np.ndarray) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.dtype.kind in "iu":
            return X
        return self.codec.to_genes(list(X))

    def fit(self, X: Sequence[Mapping[str, Any]] | np.ndarray, y: Sequence[float]) -> AccuracyPredictor:
        """Fit on architectures (dicts) or gene rows ``X`` and accuracies ``y`` (%)."""
        import torch

        from edgenas.hardware.predictor import blas_threads

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with blas_threads(1):
                return self._fit(X, y)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X: Sequence[Mapping[str, Any]] | np.ndarray, y: Sequence[float]) -> AccuracyPredictor:
        import torch

        F_ = self.codec.features(self._genes(X))
        y = np.asarray(y, dtype=np.float64)
        if len(y) != len(F_) or len(y) < 10:
            raise EdgenasError(f"an accuracy predictor needs >= 10 (arch, accuracy) pairs of equal count; "
                               f"got {len(F_)} archs and {len(y)} accuracies")
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
        t = (y - self.y_mean_) / self.y_std_
        # ridge baseline (intercept unpenalised: t is centred)
        A = F_.T @ F_ + self.ridge * np.eye(F_.shape[1])
        self.coef_ = np.linalg.solve(A, F_.T @ t)
        resid = t - F_ @ self.coef_
        self.mlps_: list[list[tuple[np.ndarray, np.ndarray]]] = []
        with torch.random.fork_rng(devices=[]):
            for m in range(self.ensemble):
                torch.manual_seed(self.random_state * 1000 + m)
                dims = [F_.shape[1]] + [self.hidden] * self.layers + [1]
                mods: list[torch.nn.Module] = []
                for a, b in zip(dims[:-1], dims[1:], strict=True):
                    mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
                net = torch.nn.Sequential(*mods[:-1])
                opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
                xt = torch.as_tensor(F_, dtype=torch.float32)
                yt = torch.as_tensor(resid, dtype=torch.float32)[:, None]
                for _ in range(self.epochs):
                    opt.zero_grad()
                    loss = torch.nn.functional.mse_loss(net(xt), yt)
                    loss.backward()
                    opt.step()
                lin = [mod for mod in net if isinstance(mod, torch.nn.Linear)]
                self.mlps_.append([(m_.weight.detach().double().numpy().T.copy(),
                                    m_.bias.detach().double().numpy().copy()) for m_ in lin])
        self.n_train_ = len(y)
        self._stack_cache = None
        return self

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        """Predicted accuracy (%) of gene rows: the finder's hot path (it runs inside one
        ``blas_threads(1)`` block of its own, so this does not set thread limits per call)."""
        return self._predict_genes(genes)

    def _predict_genes(self, genes: np.ndarray) -> np.ndarray:
        import torch

        stack = self._stacked()
        cols = torch.from_numpy(np.ascontiguousarray(self.codec.hot_columns(genes), dtype=np.int64))
        # one-hot rows times the first weights = the sum of the rows the ones select: the ridge output and
        # every member's first layer at once, without building the one-hot matrix
        h = torch.nn.functional.embedding_bag(cols, self._first_t, mode="sum").numpy() + stack[0][1]
        out = h[:, 0].astype(np.float64)
        if len(stack) > 1:
            n, E = len(h), len(self.mlps_)
            z = h[:, 1:].reshape(n, E, -1).transpose(1, 0, 2)  # (E, n, H)
            for W, b in stack[1:]:
                z = np.matmul(np.maximum(z, 0.0), W) + b[:, None, :]
            out = out + z[:, :, 0].mean(axis=0)
        return out * self.y_std_ + self.y_mean_

    def _stacked(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """float32 weights: column 0 the ridge coefficients, then every member's first layer side by side
        (with the zero row of the padding column); deeper layers stacked over members."""
        if getattr(self, "_stack_cache", None) is None:
            first_W = np.concatenate([self.coef_[:, None]] + [m[0][0] for m in self.mlps_], axis=1)
            first_W = np.vstack([first_W, np.zeros((1, first_W.shape[1]))]).astype(np.float32)
            first_b = np.concatenate([[0.0]] + [m[0][1] for m in self.mlps_]).astype(np.float32)
            rest = [(np.stack([m[i][0] for m in self.mlps_]).astype(np.float32),
                     np.stack([m[i][1] for m in self.mlps_]).astype(np.float32))
                    for i in range(1, len(self.mlps_[0]))] if self.mlps_ else []
            self._stack_cache = [(first_W, first_b), *rest]
            import torch

            self._first_t = torch.from_numpy(first_W)
        return self._stack_cache

    def predict(self, X: Sequence[Mapping[str, Any]] | np.ndarray) -> np.ndarray:
        from edgenas.hardware.predictor import blas_threads

        if not hasattr(self, "coef_"):
            raise EdgenasError("this accuracy predictor is not fitted yet")
        with blas_threads(1):  # small products: threads only add contention (and spin) on a busy CPU
            return self._predict_genes(self._genes(X))

    # ---------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike[str]) -> None:
        arrays: dict[str, np.ndarray] = {"coef": self.coef_}
        for m, mlp in enumerate(self.mlps_):
            for i, (W, b) in enumerate(mlp):
                arrays[f"mlp{m}_W{i}"], arrays[f"mlp{m}_b{i}"] = W, b
        meta = {"format": FORMAT, "space": self.space.name, "space_config": self.space.to_dict(),
                "params": {"hidden": self.hidden, "layers": self.layers, "ensemble": self.ensemble,
                           "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                           "ridge": self.ridge, "random_state": self.random_state},
                "y_mean": self.y_mean_, "y_std": self.y_std_, "n_train": self.n_train_,
                "n_mlps": len(self.mlps_), "n_layers": len(self.mlps_[0]) if self.mlps_ else 0}
        save_arrays(path, meta, arrays, compressed=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], space: MBV3Space) -> AccuracyPredictor:
        meta, arrays = load_arrays(path, "accuracy predictor", FORMAT,
                                   "fit it again with 'edgenas ofa predictor'")
        if json.dumps(meta["space_config"], sort_keys=True) != json.dumps(space.to_dict(), sort_keys=True):
            raise EdgenasError(f"accuracy predictor '{path}' was trained for space '{meta['space']}', "
                               f"not for space '{space.name}' (or a differently configured one)")
        obj = cls(space, **meta["params"])
        obj.coef_ = arrays["coef"]
        obj.mlps_ = [[(arrays[f"mlp{m}_W{i}"], arrays[f"mlp{m}_b{i}"]) for i in range(meta["n_layers"])]
                     for m in range(meta["n_mlps"])]
        obj.y_mean_, obj.y_std_, obj.n_train_ = meta["y_mean"], meta["y_std"], meta["n_train"]
        obj._stack_cache = None
        return obj
