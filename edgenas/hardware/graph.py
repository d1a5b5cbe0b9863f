"""The operator graph of a network, with shapes, costs and tensor lifetimes, read without running it.

:func:`graph_ops` traces a ``torch.nn.Module`` with ``torch.fx`` and propagates shapes on the ``meta``
device (no data, no arithmetic), then lists its operators in execution order as :class:`Op` records:
MACs / FLOPs, weight elements, activation elements read and written, and the buffer each output lives
in. The memory model (:mod:`edgenas.hardware.memory`) and the roofline (:mod:`edgenas.hardware.roofline`)
read these records; for MBV3 spaces the same records come analytically from
:meth:`edgenas.hardware.layers.Layer.ops` (a test keeps the two equal).

Conventions (those of inference engines, e.g. TFLite Micro as modelled by MCUNet, Lin et al., NeurIPS
2020): batch norm and activations are *fused* into the producing op (no memory traffic, no FLOPs of
their own; BN parameters still count as weights); reshapes are free views; an element-wise op writes in
place into an operand of the same shape that nothing reads afterwards. FLOPs: 2 per MAC for conv /
linear, 1 per input element for pooling, 1 per output element for element-wise arithmetic.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from edgenas.errors import EdgenasError


@dataclass
class Op:
    """One operator: what it computes and what it reads and writes (elements, not bytes)."""

    name: str
    kind: str  # conv | linear | pool | eltwise | fused | view | input
    macs: int = 0
    flops: int = 0
    weight_elems: int = 0
    in_elems: int = 0
    out_elems: int = 0
    out_buffer: int = -1  # id of the buffer holding the output (-1: none)
    reads: list[int] = field(default_factory=list)  # buffers read
    step: int = 0  # position in execution order
    #: conv / linear: (in channels, out channels, kernel h, kernel w, groups, out h, out w), what the
    #: accelerator model's dataflows map (:mod:`edgenas.hardware.accelerator`)
    geometry: tuple[int, int, int, int, int, int, int] | None = None

    def bytes(self, bytes_per_elem: float) -> float:
        return (self.weight_elems + self.in_elems + self.out_elems) * bytes_per_elem


FUSED_MODULES = ("BatchNorm1d", "BatchNorm2d", "ReLU", "ReLU6", "Hardswish", "Hardsigmoid", "Sigmoid", "SiLU",
                 "GELU", "Identity", "Dropout", "Tanh", "LeakyReLU")
FUSED_FUNCS = ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "dropout", "tanh",
               "leaky_relu", "batch_norm", "contiguous", "clone")
VIEW_FUNCS = ("flatten", "view", "reshape", "squeeze", "unsqueeze", "size", "getitem", "getattr", "dim")
POOL_FUNCS = ("mean", "adaptive_avg_pool2d", "avg_pool2d", "max_pool2d", "sum", "amax")
ELTWISE_BIN = ("add", "mul", "sub", "div", "iadd", "imul", "truediv")


def _numel(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _spatial(shape: tuple[int, ...]) -> tuple[int, int]:
    return (int(shape[2]), int(shape[3])) if len(shape) == 4 else (1, 1)


def _fname(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target)).lstrip("_")


@dataclass
class Graph:
    """Operators in execution order and the activation buffers they live in.

    ``buffers[b] = (elements, first step, last step)``: buffer ``b`` is allocated when the op at its first
    step runs and freed after the op at its last step (its last reader) ran.
    """

    ops: list[Op]
    buffers: dict[int, tuple[int, int, int]]

    def peak_live_elems(self) -> tuple[int, str]:
        """The peak, over the ops, of the summed sizes of live buffers, and the op where it happens."""
        best, where = 0, ""
        for op in self.ops:
            live = sum(n for n, first, last in self.buffers.values() if first <= op.step <= last)
            if live > best:
                best, where = live, op.name
        return best, where

    def totals(self) -> dict[str, int]:
        return {
            "macs": sum(o.macs for o in self.ops), "flops": sum(o.flops for o in self.ops),
            "weight_elems": sum(o.weight_elems for o in self.ops),
            "activation_elems": sum(o.in_elems + o.out_elems for o in self.ops if o.kind != "input"),
        }


def graph_ops(model: Any, input_shape: tuple[int, ...]) -> Graph:
    """The operators of ``model`` on an input of ``input_shape`` (batch included), in execution order."""
    import copy

    import torch
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).eval().to("meta"))
        ShapeProp(gm).propagate(torch.empty(input_shape, device="meta"))
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the same user-facing problem
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EdgenasError(
            f"cannot read the graph of {type(model).__name__} with torch.fx ({type(exc).__name__}: {first}); "
            f"memory and roofline need a traceable model"
        ) from None
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((index[u] for u in n.users), default=index[n]) for n in nodes}
    buffer_of: dict[Any, int] = {}
    buffers: dict[int, tuple[int, int, int]] = {}
    ops: list[Op] = []

    def shape(n: Any) -> tuple[int, ...] | None:
        tm = n.meta.get("tensor_meta")
        return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None

    for idx, n in enumerate(nodes):
        out_shape = shape(n)
        if n.op == "output":
            break
        if n.op == "get_attr" or out_shape is None:
            continue
        ins = [a for a in n.all_input_nodes if a in buffer_of]
        in_elems = sum(_numel(shape(a)) for a in ins)
        out_elems = _numel(out_shape)
        name = str(n.target) if n.op == "call_module" else n.name
        op = Op(name, "eltwise", in_elems=in_elems, out_elems=out_elems, reads=[buffer_of[a] for a in ins])
        op.step = idx
        alias: Any = None
        if n.op == "placeholder":
            op.kind, op.in_elems = "input", 0
        elif n.op == "call_module":
            mod = modules[n.target]
            cls = type(mod).__name__
            op.weight_elems = sum(p.numel() for p in mod.parameters(recurse=False))
            if isinstance(mod, torch.nn.Conv2d):
                op.kind = "conv"
                op.macs = out_elems * (mod.in_channels // mod.groups) * _numel(mod.kernel_size)
                op.flops = 2 * op.macs
                kh, kw = mod.kernel_size
                op.geometry = (mod.in_channels, mod.out_channels, kh, kw, mod.groups, *_spatial(out_shape))
            elif isinstance(mod, torch.nn.Linear):
                op.kind = "linear"
                op.macs = out_elems * mod.in_features
                op.flops = 2 * op.macs
                op.geometry = (mod.in_features, mod.out_features, 1, 1, 1, out_elems // mod.out_features, 1)
            elif cls in FUSED_MODULES:
                op.kind, alias = "fused", ins[0] if ins else None
            elif cls in ("Flatten", "Unflatten"):
                op.kind, alias = "view", ins[0] if ins else None
            elif "Pool" in cls:
                op.kind, op.flops = "pool", in_elems
            else:
                op.flops = out_elems
        else:  # call_function / call_method
            fn = _fname(n.target)
            if n.target in (operator.getitem, getattr) or fn in VIEW_FUNCS:
                op.kind, alias = "view", ins[0] if ins else None
            elif fn in FUSED_FUNCS:
                op.kind, alias = "fused", ins[0] if ins else None
            elif fn in POOL_FUNCS:
                op.kind, op.flops = "pool", in_elems
            else:
                op.flops = out_elems
                if fn in ELTWISE_BIN:  # in place into an operand of the same shape read by nothing later
                    alias = next((a for a in ins if shape(a) == out_shape and last_use[a] == idx), None)
        if op.kind in ("fused", "view"):
            op.in_elems = op.out_elems = 0
        if alias is not None:
            b = buffer_of[alias]
            elems, first, last = buffers[b]
            buffers[b] = (elems, first, max(last, last_use[n]))
        else:
            b = len(buffers)
            buffers[b] = (out_elems, idx, last_use[n])
        buffer_of[n] = op.out_buffer = b
        ops.append(op)
    return Graph(ops, buffers)
