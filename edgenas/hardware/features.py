"""Architecture features for latency predictors: the one-hot encoding plus derived costs.

For MBV3 spaces everything is computed from the vectorised layer index
(:class:`edgenas.hardware.layers.MBV3Layers`) without building a network: the one-hot encoding (the
same as :meth:`SearchSpace.encode_batch`), MACs per stage (head, each stage, tail) and in total,
parameters, the number of layers, and, where a latency table is given, its raw and calibrated sums. Other
spaces get their own ``latency_features`` where they define them (HAT's ten numbers per SubTransformer),
else the one-hot encoding of :meth:`SearchSpace.encode_batch` (slower: it validates each arch in Python).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgenas.hardware.layers import MBV3Layers
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.mbv3 import MBV3Space


class Features:
    """``transform(archs) -> (n, d)`` float matrix; ``names`` lists the columns.

    ``lut_values`` (``(n_resolutions, n_layers + 1)``, from :class:`edgenas.hardware.lut.LutModel`) and
    ``lut_calibration`` (``a, b, c``) add the table's sums as features; they are stored with a saved
    predictor, which therefore does not need the table file at prediction time.
    """

    def __init__(self, space: SearchSpace, num_classes: int = 10, in_channels: int = 3, derived: bool = True,
                 lut_values: np.ndarray | None = None, lut_calibration: Sequence[float] | None = None) -> None:
        self.space, self.num_classes, self.in_channels = space, int(num_classes), int(in_channels)
        self.layers = MBV3Layers(space, num_classes, in_channels) if isinstance(space, MBV3Space) else None
        self.derived = bool(derived and self.layers is not None)
        self.lut_values = None if lut_values is None else np.asarray(lut_values, dtype=np.float64)
        self.lut_calibration = None if lut_calibration is None else np.asarray(lut_calibration, dtype=np.float64)
        if self.lut_values is not None and (self.layers is None or self.lut_values.shape !=
                                            (len(self.layers.resolutions), len(self.layers.layers) + 1)):
            raise ValueError("latency-table values do not match this space's layers")
        self.own = self.layers is None and hasattr(space, "latency_features")  # the space's own features
        self.names = (list(space.latency_feature_names()) if self.own
                      else [f"onehot[{i}]" for i in range(space.encoding_size)])
        if self.derived:
            assert self.layers is not None
            self.names += [f"macs_segment{i}" for i in range(len(self.layers.stage_slices()))]
            self.names += ["log_macs", "log_params", "n_layers", "resolution", "width"]
        if self.lut_values is not None:
            self.names += ["lut_sum", "log_lut_sum", "lut_calibrated"]

    @property
    def size(self) -> int:
        return len(self.names)

    def transform(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.own:
            return np.asarray(self.space.latency_features(archs), dtype=np.float64)
        if self.layers is None:
            return self.space.encode_batch(archs).astype(np.float64)
        return self.transform_codes(self.layers.batch_codes(archs))

    def transform_codes(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """:meth:`transform` from choice indices (``MBV3Layers.batch_codes``) instead of arch dicts: what a
        search that keeps its population as a matrix calls (no per-arch Python)."""
        L = self.layers
        assert L is not None, "choice indices need a layer index (an MBV3-style space)"
        ids = L.batch_layer_ids(codes)
        cols = [self._onehot(codes)]
        if self.derived:
            macs = np.append(L.layer_macs, 0.0)[ids]
            cols.append(np.column_stack([macs[:, sl].sum(axis=1) for sl in L.stage_slices()]) / 1e6)
            n_layers = (ids >= 0).sum(axis=1).astype(np.float64)
            cols.append(np.column_stack([
                np.log(macs.sum(axis=1) + 1.0), np.log(L.sum(L.layer_params, ids) + 1.0), n_layers,
                np.asarray(L.resolutions, dtype=np.float64)[codes["r"]],
                np.asarray(L.widths, dtype=np.float64)[codes["w"]],
            ]))
        if self.lut_values is not None:
            s = self.lut_values[codes["r"][:, None], ids].sum(axis=1)
            a, b, c = self.lut_calibration if self.lut_calibration is not None else (1.0, 0.0, 0.0)
            n = (ids >= 0).sum(axis=1)
            cols.append(np.column_stack([s, np.log(np.maximum(s, 1e-9)), a * s + b * n + c]))
        return np.concatenate(cols, axis=1)

    def _onehot(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """The space's one-hot encoding from choice indices (inactive blocks all zero): one scatter of
        every row's hot columns, inactive blocks sent to a spare column that is then dropped."""
        sp, L = self.space, self.layers
        assert L is not None
        n, S, M = len(codes["r"]), L.num_stages, L.max_depth
        if not hasattr(self, "_block_offsets"):
            self._block_offsets = (
                np.array([sp._offsets[f"s{s}.b{j}.kernel"] for s in range(1, S + 1) for j in range(1, M + 1)]),
                np.array([sp._offsets[f"s{s}.b{j}.expand"] for s in range(1, S + 1) for j in range(1, M + 1)]),
                np.array([sp._offsets["resolution"], sp._offsets["width"]]
                         + [sp._offsets[f"s{s}.depth"] for s in range(1, S + 1)]),
            )
        ko, eo, fo = self._block_offsets
        spare = sp.encoding_size
        active = (np.arange(M)[None, None, :] < codes["depth"][:, :, None]).reshape(n, S * M)
        hot = np.concatenate([
            fo[None, :] + np.column_stack([codes["r"], codes["w"], codes["d"]]),
            np.where(active, ko[None, :] + codes["k"].reshape(n, S * M), spare),
            np.where(active, eo[None, :] + codes["e"].reshape(n, S * M), spare),
        ], axis=1)
        out = np.zeros((n, spare + 1))
        np.put_along_axis(out, hot, 1.0, axis=1)
        return out[:, :spare]
