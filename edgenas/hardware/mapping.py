"""The compiler's mapping of one convolution onto the global buffer: loop order and tile sizes that minimise DRAM
traffic.

NAAS (Lin, Yang & Han, "NAAS: Neural Accelerator Architecture Search", DAC 2021) searches, besides the
accelerator's sizing and the network, the *compiler mapping* of every layer: in which order the loops over
output channels, output rows and input channels run around the on-chip buffer, and how large each tile is.
The mapping decides how often each tensor crosses the DRAM boundary: a tile of weights stays on chip while
a loop that does not index it runs inside it; otherwise it is fetched again for every iteration of every
outer loop that does not index it. Partial sums that leave the buffer before all input channels are added
are written out and read back. NAAS searches the mapping with evolution; one layer's space here is small
(six loop orders x a few tile sizes per loop), so it is searched exhaustively and vectorised, per layer.

The loop nest (outermost first, any order of ``k``, ``h``, ``c``):

* ``k``: tiles of ``tk`` output channels; ``h``: tiles of ``th`` output rows (all output columns);
  ``c``: tiles of ``tc`` of a group's input channels;
* the buffer holds one tile of each tensor at a time: weights ``tk x tc x kh x kw``, inputs (the input
  channels of those output channels x the input rows those output rows need, halo included, x the input
  width), outputs ``tk x th x out_w``;
* DRAM traffic of a tensor = its size (inputs: with the halo rows of every row tile) x the trip counts of the
  loops that do not index it and enclose a loop that does (with more than one trip); outputs are written once
  per pass over the input-channel tiles and read back for every pass but the first.

A depthwise or grouped layer's input tiles are indexed by ``k`` too (each output channel reads its own input
channels); for a grouped layer whose ``k`` tiles split a group this counts the group's inputs once per tile
(an over-estimate; depthwise layers, the only grouped ones in the MBV3 spaces, are exact). The model counts
elements; the accelerator model multiplies by the word size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LOOPS = ("k", "h", "c")
ORDERS: tuple[tuple[str, ...], ...] = tuple(itertools.permutations(LOOPS))


@dataclass(frozen=True)
class ConvShape:
    """One convolution / linear layer as the buffer sees it."""

    cin: int
    cout: int
    kh: int
    kw: int
    groups: int
    out_h: int
    out_w: int
    in_h: int
    in_w: int
    stride: int = 1

    @property
    def cpg(self) -> int:
        return self.cin // self.groups

    @property
    def opg(self) -> int:
        return self.cout // self.groups

    @property
    def weight_elems(self) -> int:
        return self.cout * self.cpg * self.kh * self.kw

    @property
    def out_elems(self) -> int:
        return self.cout * self.out_h * self.out_w

    @property
    def in_elems(self) -> int:
        return self.cin * self.in_h * self.in_w

    def in_rows(self, out_rows: np.ndarray | int) -> np.ndarray:
        """Input rows read for ``out_rows`` consecutive output rows (halo included, at most the input height)."""
        return np.minimum(self.in_h, (np.asarray(out_rows) - 1) * self.stride + self.kh)

    def in_channels(self, tk: np.ndarray | int, tc: np.ndarray | int) -> np.ndarray:
        """Input channels a tile of ``tk`` output channels x ``tc`` per-group input channels reads."""
        groups_touched = np.maximum(1, np.ceil(np.asarray(tk) / self.opg))
        return np.minimum(self.cin, groups_touched * np.asarray(tc))


@dataclass(frozen=True)
class LoopNest:
    """A mapping and what it costs."""

    order: tuple[str, ...]  # outermost first
    tk: int
    th: int
    tc: int
    dram_elems: float
    buffer_elems: float
    weight_elems: float
    input_elems: float
    output_elems: float


def tile_sizes(dim: int) -> np.ndarray:
    """Candidate tile sizes of a loop of ``dim`` iterations: ``ceil(dim / n)`` for n = 1, 2, 4, ... and 1."""
    n = 1 << np.arange(int(math.log2(max(dim, 1))) + 2)
    return np.unique(np.concatenate([np.ceil(dim / n).astype(np.int64), [1]]))


def _halo_rows(shape: ConvShape, th: np.ndarray) -> np.ndarray:
    """Input rows read over one sweep of the row tiles (halos counted once per tile)."""
    full = shape.out_h // th
    rest = shape.out_h - full * th
    return full * shape.in_rows(th) + np.where(rest > 0, shape.in_rows(np.maximum(rest, 1)), 0)


def _reloads(order: tuple[str, ...], indexed: set[str], trips: dict[str, np.ndarray]) -> np.ndarray:
    """How many times each tile of a tensor indexed by ``indexed`` loops is fetched: the product of the trip
    counts of the loops that do not index it and enclose an indexing loop with more than one trip."""
    factor = np.ones_like(trips["k"], dtype=np.float64)
    for depth, loop in enumerate(order):
        if loop in indexed:
            continue
        inner_changes = np.zeros_like(factor, dtype=bool)
        for inner in order[depth + 1:]:
            if inner in indexed:
                inner_changes |= trips[inner] > 1
        factor = factor * np.where(inner_changes, trips[loop], 1)
    return factor


def mapping_costs(shape: ConvShape, order: tuple[str, ...], tk: np.ndarray, th: np.ndarray,
                  tc: np.ndarray) -> dict[str, np.ndarray]:
    """DRAM traffic (elements) of each tensor and the buffer footprint, for arrays of tile sizes."""
    tk, th, tc = (np.asarray(t, dtype=np.int64) for t in (tk, th, tc))
    trips = {"k": np.ceil(shape.cout / tk), "h": np.ceil(shape.out_h / th), "c": np.ceil(shape.cpg / tc)}
    grouped = shape.groups > 1
    weights = shape.weight_elems * _reloads(order, {"k", "c"}, trips)
    in_channels_swept = shape.cin if grouped else shape.cpg
    inputs = in_channels_swept * _halo_rows(shape, th) * shape.in_w * _reloads(
        order, {"h", "c", "k"} if grouped else {"h", "c"}, trips)
    passes = _reloads(order, {"k", "h"}, trips)
    outputs = shape.out_elems * (2 * passes - 1)
    buffer = (tk * tc * shape.kh * shape.kw + shape.in_channels(tk, tc) * shape.in_rows(th) * shape.in_w
              + tk * th * shape.out_w)
    return {"weights": weights, "inputs": inputs, "outputs": outputs, "dram": weights + inputs + outputs,
            "buffer": buffer.astype(np.float64)}


@lru_cache(maxsize=65536)
def best_mapping(shape: ConvShape, buffer_elems: int) -> LoopNest | None:
    """The loop order and tiles with the least DRAM traffic whose tiles fit ``buffer_elems`` (ties: the smaller
    footprint); None when not even the smallest tiles fit."""
    grid = np.array(list(itertools.product(tile_sizes(shape.cout), tile_sizes(shape.out_h),
                                           tile_sizes(shape.cpg))), dtype=np.int64)
    best: LoopNest | None = None
    for order in ORDERS:
        cost = mapping_costs(shape, order, grid[:, 0], grid[:, 1], grid[:, 2])
        fits = cost["buffer"] <= buffer_elems
        if not fits.any():
            continue
        i = int(np.lexsort((cost["buffer"], np.where(fits, cost["dram"], np.inf)))[0])
        nest = LoopNest(order, int(grid[i, 0]), int(grid[i, 1]), int(grid[i, 2]), float(cost["dram"][i]),
                        float(cost["buffer"][i]), float(cost["weights"][i]), float(cost["inputs"][i]),
                        float(cost["outputs"][i]))
        if best is None or (nest.dram_elems, nest.buffer_elems) < (best.dram_elems, best.buffer_elems):
            best = nest
    return best


def shape_of(geometry: tuple[int, ...], in_elems: int) -> ConvShape:
    """A :class:`ConvShape` from an operator's ``geometry`` and input size (the input's aspect ratio is taken
    to be the output's; the stride is the ratio of their heights)."""
    cin, cout, kh, kw, groups, oh, ow = (int(v) for v in geometry)
    area = max(in_elems // max(cin, 1), 1)
    in_h = max(1, round(math.sqrt(area * oh / max(ow, 1))))
    in_w = max(1, area // in_h)
    stride = max(1, round(in_h / max(oh, 1)))
    return ConvShape(cin, cout, kh, kw, groups, oh, ow, in_h, in_w, stride)
