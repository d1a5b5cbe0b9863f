"""The layers of an MBV3-style network, described without building it, and a vectorised index of them.

A layer-wise latency table (:mod:`edgenas.hardware.lut`) needs three things from a space: the list of
*distinct* layer configurations the space can produce, the layers of a given architecture, and a fast
way to sum any per-layer quantity over many architectures. This module gives all three for the
MobileNetV3 spaces of :mod:`edgenas.spaces.mbv3` (the unit of a "layer" is the one of OFA's and
ProxylessNAS's tables: a whole MBConv block, the stem conv, the final 1x1 conv, the pooled feature-mix
conv and the classifier), plus the analytic MACs, parameters and activation sizes of each layer, which
the predictors, the memory model and the roofline reuse. It never imports torch: a test checks the
counts against the built network.
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError, InvalidArchitecture
from edgenas.hardware.graph import Op
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.mbv3 import MBV3Space

# The fixed (architecture-independent in kind) layers of every MBV3 network, in execution order.
FIXED_HEAD = ("stem", "first")
FIXED_TAIL = ("final_expand", "pool_mix", "classifier")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The channel rounding of the MobileNet family (same rule as :func:`edgenas.models.blocks.make_divisible`,
    repeated here so that this module stays torch-free; a test keeps the two equal)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a same-padded (``kernel // 2``) convolution."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class Layer:
    """One layer of an MBV3 network, enough to build, time and cost it.

    ``op`` is ``conv`` (conv-BN-activation), ``mbconv`` (inverted residual block), ``pool_mix`` (global
    average pool, 1x1 conv, hard-swish) or ``linear`` (the classifier). ``size`` is the (square) input
    size; ``expand`` the expand ratio and ``hidden`` the expanded channel count of an MBConv.
    """

    op: str
    cin: int
    size: int
    cout: int
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    hidden: int = 0
    act: str = "none"
    se: bool = False
    se_hidden: int = 0
    residual: bool = False

    @property
    def out_size(self) -> int:
        if self.op in ("pool_mix", "linear"):
            return 1
        return conv_out(self.size, self.kernel, self.stride)

    @property
    def key(self) -> str:
        """A readable, unique key: op, input shape, output channels and every choice that changes the cost."""
        base = f"{self.op}-in:{self.cin}x{self.size}x{self.size}-out:{self.cout}"
        if self.op == "conv":
            return f"{base}-k:{self.kernel}-s:{self.stride}-act:{self.act}"
        if self.op == "mbconv":
            return (
                f"{base}-k:{self.kernel}-s:{self.stride}-e:{self.expand}-act:{self.act}"
                f"-se:{int(self.se)}-res:{int(self.residual)}"
            )
        return base

    # ------------------------------------------------------------------ costs
    def macs(self) -> int:
        """Multiply-accumulates of convolutions and matrix products (what ``torch.utils.flop_counter``
        counts: pooling, normalisation and activations are free)."""
        o = self.out_size
        if self.op == "conv":
            return self.cout * self.cin * self.kernel**2 * o * o
        if self.op == "mbconv":
            h, s = self.size, self.hidden
            total = s * self.kernel**2 * o * o + self.cout * s * o * o
            if self.expand != 1:
                total += s * self.cin * h * h
            if self.se:
                total += 2 * s * self.se_hidden
            return total
        return self.cin * self.cout  # pool_mix (1x1 conv on 1x1) and linear

    def params(self) -> int:
        """Trainable parameters (BN scale and shift included)."""
        if self.op == "conv":
            return self.cout * self.cin * self.kernel**2 + 2 * self.cout
        if self.op == "mbconv":
            s = self.hidden
            total = s * self.kernel**2 + 2 * s + self.cout * s + 2 * self.cout
            if self.expand != 1:
                total += s * self.cin + 2 * s
            if self.se:
                total += s * self.se_hidden + self.se_hidden + self.se_hidden * s + s
            return total
        if self.op == "pool_mix":
            return self.cin * self.cout
        return self.cin * self.cout + self.cout  # linear

    def ops(self, prefix: str = "") -> list[Op]:
        """The primitive operators of this layer with the conventions of :mod:`edgenas.hardware.graph`
        (BN folded: its parameters are weights of a zero-cost fused op; activations free)."""
        o, s = self.out_size, self.hidden

        def conv(name: str, cin: int, cout: int, k: int, groups: int, size_in: int, size_out: int,
                 bias: bool = False, bn: bool = True) -> list[Op]:
            macs = cout * (cin // groups) * k * k * size_out * size_out
            w = cout * (cin // groups) * k * k + (cout if bias else 0)
            out = [Op(prefix + name, "conv", macs, 2 * macs, w, cin * size_in**2, cout * size_out**2,
                      geometry=(cin, cout, k, k, groups, size_out, size_out))]
            if bn:
                out.append(Op(prefix + name + ".bn", "fused", weight_elems=2 * cout))
            return out

        if self.op == "conv":
            return conv("conv", self.cin, self.cout, self.kernel, 1, self.size, o)
        if self.op == "pool_mix":
            return [Op(prefix + "pool", "pool", 0, self.cin * self.size**2, 0, self.cin * self.size**2, self.cin),
                    *conv("mix", self.cin, self.cout, 1, 1, 1, 1, bn=False)]
        if self.op == "linear":
            macs = self.cin * self.cout
            return [Op(prefix + "fc", "linear", macs, 2 * macs, macs + self.cout, self.cin, self.cout,
                       geometry=(self.cin, self.cout, 1, 1, 1, 1, 1))]
        ops: list[Op] = []
        if self.expand != 1:
            ops += conv("expand", self.cin, s, 1, 1, self.size, self.size)
        ops += conv("depthwise", s, s, self.kernel, s, self.size, o)
        if self.se:
            e = s * o * o
            ops.append(Op(prefix + "se.pool", "pool", 0, e, 0, e, s))
            ops += conv("se.reduce", s, self.se_hidden, 1, 1, 1, 1, bias=True, bn=False)
            ops += conv("se.expand", self.se_hidden, s, 1, 1, 1, 1, bias=True, bn=False)
            ops.append(Op(prefix + "se.mul", "eltwise", 0, e, 0, e + s, e))
        ops += conv("project", s, self.cout, 1, 1, o, o)
        if self.residual:
            n = self.cout * o * o
            ops.append(Op(prefix + "add", "eltwise", 0, n, 0, 2 * n, n))
        return ops

    def input_elems(self) -> int:
        return self.cin * self.size * self.size

    def output_elems(self) -> int:
        return self.cout * self.out_size * self.out_size

    def peak_elems(self) -> int:
        """Peak live activation elements while this layer runs, input and output included.

        The rule of :mod:`edgenas.hardware.memory`: BN and activations are fused into the preceding conv,
        an element-wise op writes in place into an operand it is the last user of, and every other op needs
        its inputs and its output alive at once (MCUNet's accounting, Lin et al., NeurIPS 2020).
        """
        i, o = self.input_elems(), self.output_elems()
        if self.op == "conv":
            return i + o
        if self.op == "pool_mix":
            return max(i + self.cin, self.cin + self.cout)
        if self.op == "linear":
            return i + o
        h, s, so = self.size, self.hidden, self.out_size
        keep = i if self.residual else 0  # the block's input waits for the residual add
        e1 = s * h * h if self.expand != 1 else i
        e2 = s * so * so
        steps = []
        if self.expand != 1:
            steps.append(i + e1)
        steps.append(e1 + e2 + (keep if self.expand != 1 else 0))
        if self.se:
            steps += [e2 + s + keep, e2 + s + self.se_hidden + keep, e2 + self.se_hidden + s + keep]
        steps.append(e2 + o + keep)
        return max(steps)


def _index_table(choices: Sequence[float]) -> np.ndarray | None:
    """``table[value] = position`` (-1 elsewhere) when every choice is a small non-negative integer."""
    if not all(float(c).is_integer() and 0 <= c <= 4096 for c in choices):
        return None
    table = np.full(int(max(choices)) + 2, -1, dtype=np.int64)
    for i, c in enumerate(choices):
        table[int(c)] = i
    return table


class MBV3Layers:
    """Every layer an MBV3 space can produce, and a vectorised map from architectures to their layers.

    ``batch_layer_ids(archs)`` returns an ``(n, L)`` integer array of positions in :attr:`layers`
    (``-1`` for blocks a shallower stage does not have); ``sum(values, ids)`` then sums any per-layer
    vector (latency, MACs, parameters) for all architectures in one numpy operation.
    """

    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int = 3) -> None:
        if not isinstance(space, MBV3Space):
            raise EdgenasError(
                f"layer tables support MBV3-style spaces (mbv3, mbv3-tiny); space '{space.name}' is not one"
            )
        self.space, self.num_classes, self.in_channels = space, int(num_classes), int(in_channels)
        cfg = space.mbv3
        self.cfg = cfg
        self.resolutions = tuple(int(r) for r in cfg.resolutions)
        self.widths = tuple(float(w) for w in cfg.widths)
        self.kernels, self.expands, self.depths = tuple(cfg.kernels), tuple(cfg.expands), tuple(cfg.depths)
        self.num_stages, self.max_depth = cfg.num_stages, cfg.max_depth
        self.layers: list[Layer] = []
        self.position: dict[str, int] = {}
        nr, nw, ns = len(self.resolutions), len(self.widths), self.num_stages
        nk, ne = len(self.kernels), len(self.expands)
        self.fixed = np.zeros((nr, nw, len(FIXED_HEAD) + len(FIXED_TAIL)), dtype=np.int64)
        # block[r, w, stage, first(0)/later(1), kernel, expand]
        self.block = np.zeros((nr, nw, ns, 2, nk, ne), dtype=np.int64)
        for ri, res in enumerate(self.resolutions):
            for wi, width in enumerate(self.widths):
                self._enumerate(ri, wi, res, width)
        self._names = space.names
        self._getter = operator.itemgetter(*self._names)
        self._packer = struct.Struct(f"{len(self._names)}d")
        col = {n: i for i, n in enumerate(self._names)}
        S, M = self.num_stages, self.max_depth
        self._cols_r, self._cols_w = np.array([col["resolution"]]), np.array([col["width"]])
        self._cols_d = np.array([col[f"s{s}.depth"] for s in range(1, S + 1)])
        self._cols_k = np.array([col[f"s{s}.b{j}.kernel"] for s in range(1, S + 1) for j in range(1, M + 1)])
        self._cols_e = np.array([col[f"s{s}.b{j}.expand"] for s in range(1, S + 1) for j in range(1, M + 1)])

    # ---------------------------------------------------------- enumeration
    def _add(self, layer: Layer) -> int:
        pos = self.position.get(layer.key)
        if pos is None:
            pos = self.position[layer.key] = len(self.layers)
            self.layers.append(layer)
        return pos

    def channels(self, width: float) -> dict[str, Any]:
        cfg, div = self.cfg, self.cfg.channel_divisor

        def ch(c: int) -> int:
            return make_divisible(c * width, div)

        return {
            "stem": ch(cfg.stem_channels), "first": ch(cfg.first_block_channels),
            "stages": [ch(c) for c in cfg.stage_channels],
            "final": ch(cfg.final_expand_channels), "feature": ch(cfg.feature_channels),
        }

    def _mbconv(self, cin: int, size: int, cout: int, kernel: int, expand: int, stride: int, act: str,
                se: bool) -> Layer:
        div = self.cfg.channel_divisor
        hidden = make_divisible(cin * expand, div)
        return Layer(
            "mbconv", cin, size, cout, kernel, stride, expand, hidden, act, se,
            make_divisible(hidden / 4, div) if se else 0, stride == 1 and cin == cout,
        )

    def _enumerate(self, ri: int, wi: int, res: int, width: float) -> None:
        cfg, ch = self.cfg, self.channels(width)
        stem = Layer("conv", self.in_channels, res, ch["stem"], 3, 2, act="hswish")
        size = stem.out_size
        first = self._mbconv(ch["stem"], size, ch["first"], 3, 1, 1, "relu", False)
        fixed = [self._add(stem), self._add(first)]
        cin = ch["first"]
        for s in range(self.num_stages):
            cout, stride = ch["stages"][s], cfg.stage_strides[s]
            act, se = cfg.stage_activations[s], cfg.stage_se[s]
            out = conv_out(size, 3, stride)
            for ki, k in enumerate(self.kernels):
                for ei, e in enumerate(self.expands):
                    self.block[ri, wi, s, 0, ki, ei] = self._add(self._mbconv(cin, size, cout, k, e, stride, act, se))
                    self.block[ri, wi, s, 1, ki, ei] = self._add(self._mbconv(cout, out, cout, k, e, 1, act, se))
            cin, size = cout, out
        fixed.append(self._add(Layer("conv", cin, size, ch["final"], 1, 1, act="hswish")))
        fixed.append(self._add(Layer("pool_mix", ch["final"], size, ch["feature"], act="hswish")))
        fixed.append(self._add(Layer("linear", ch["feature"], 1, self.num_classes)))
        self.fixed[ri, wi] = fixed

    def layer_ids_at(self, ri: int) -> np.ndarray:
        """Positions of the layers that networks at resolution index ``ri`` can contain."""
        return np.unique(np.concatenate([self.fixed[ri].ravel(), self.block[ri].ravel()]))

    # ------------------------------------------------------------ one arch
    def arch_layers(self, arch: Mapping[str, Any]) -> list[Layer]:
        """The layers of ``arch`` in execution order."""
        ids = self.batch_layer_ids([arch])[0]
        return [self.layers[i] for i in ids if i >= 0]

    # ---------------------------------------------------------- vectorised
    @property
    def num_slots(self) -> int:
        return self.fixed.shape[2] + self.num_stages * self.max_depth

    def batch_codes(self, archs: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Choice indices of many architectures: ``r``, ``w`` (n,), ``d`` (n, S) depths and ``k``, ``e``
        (n, S, M) kernel/expand indices. Invalid active choices raise :class:`InvalidArchitecture`
        naming the architecture's position and the dimension."""
        n = len(archs)
        try:
            blob = b"".join(itertools.starmap(self._packer.pack, map(self._getter, archs)))
        except (KeyError, TypeError, struct.error):
            canon = [self._getter(self.space.validate(a)) for a in archs]
            blob = b"".join(itertools.starmap(self._packer.pack, canon))
        values = np.frombuffer(blob, dtype=np.float64).reshape(n, len(self._names))
        S, M = self.num_stages, self.max_depth

        def lookup(cols: np.ndarray, choices: Sequence[float], active: np.ndarray | None = None) -> np.ndarray:
            v = values[:, cols]
            ch = np.asarray(choices, dtype=np.float64)
            table = _index_table(choices)
            if table is not None:  # small non-negative integers: one table look-up
                iv = np.clip(v, 0, len(table) - 1).astype(np.int64)
                idx = table[iv]
                bad = (idx < 0) | (iv != v)
                idx = np.maximum(idx, 0)
            else:
                order = np.argsort(ch)
                idx = order[np.clip(np.searchsorted(ch[order], v), 0, len(ch) - 1)]
                bad = ch[idx] != v
            if active is not None:
                bad &= active
                idx = np.where(active, idx, 0)
            if bad.any():
                row, c = (int(x[0]) for x in np.nonzero(bad))
                self.space.validate(archs[row])  # raises the space's own one-line message
                name = self._names[int(np.atleast_1d(cols)[c])]
                raise InvalidArchitecture(f"architecture {row}: {name} {v[row, c]!r} not in {list(choices)}")
            return idx

        r = lookup(self._cols_r, self.resolutions)[:, 0]
        w = lookup(self._cols_w, self.widths)[:, 0]
        d = lookup(self._cols_d, self.depths)
        depth = np.asarray(self.depths)[d]
        active = (np.arange(M)[None, None, :] < depth[:, :, None]).reshape(n, S * M)
        k = lookup(self._cols_k, self.kernels, active).reshape(n, S, M)
        e = lookup(self._cols_e, self.expands, active).reshape(n, S, M)
        return {"r": r, "w": w, "d": d, "depth": depth, "k": k, "e": e}

    def batch_layer_ids(self, archs: Sequence[Mapping[str, Any]] | dict[str, np.ndarray]) -> np.ndarray:
        """``(n, L)`` positions in :attr:`layers` of every layer of every architecture (``-1``: absent)."""
        c = archs if isinstance(archs, dict) else self.batch_codes(archs)
        r, w, depth, k, e = c["r"], c["w"], c["depth"], c["k"], c["e"]
        n, S, M = len(r), self.num_stages, self.max_depth
        later = np.zeros((S, M), dtype=np.int64)
        later[:, 1:] = 1
        rr, ww = r[:, None, None], w[:, None, None]
        ss = np.arange(S)[None, :, None]
        blocks = self.block[rr, ww, ss, later[None], k, e]  # (n, S, M)
        blocks = np.where(np.arange(M)[None, None, :] < depth[:, :, None], blocks, -1)
        fixed = self.fixed[r, w]  # (n, 5)
        nh = len(FIXED_HEAD)
        return np.concatenate([fixed[:, :nh], blocks.reshape(n, S * M), fixed[:, nh:]], axis=1)

    @staticmethod
    def sum(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Sum a per-layer vector over each row of ``ids`` (``-1`` entries count zero)."""
        padded = np.append(np.asarray(values, dtype=np.float64), 0.0)
        return padded[ids].sum(axis=1)

    @cached_property
    def layer_macs(self) -> np.ndarray:
        return np.array([lay.macs() for lay in self.layers], dtype=np.float64)

    @cached_property
    def layer_params(self) -> np.ndarray:
        return np.array([lay.params() for lay in self.layers], dtype=np.float64)

    @cached_property
    def layer_peak(self) -> np.ndarray:
        return np.array([lay.peak_elems() for lay in self.layers], dtype=np.float64)

    def stage_slices(self) -> list[slice]:
        """Column slices of :meth:`batch_layer_ids` per stage (head, stage 1..S, tail)."""
        nh, M = len(FIXED_HEAD), self.max_depth
        out = [slice(0, nh)]
        out += [slice(nh + s * M, nh + (s + 1) * M) for s in range(self.num_stages)]
        out.append(slice(nh + self.num_stages * M, self.num_slots))
        return out

    def describe(self) -> str:
        return (
            f"space '{self.space.name}', {self.num_classes} classes, {self.in_channels} input channels, "
            f"resolutions {list(self.resolutions)}, widths {list(self.widths)}"
        )
