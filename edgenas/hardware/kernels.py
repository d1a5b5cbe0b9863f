"""Kernels: the units an inference engine runs, read from any network, and sampled to train predictors.

nn-Meter (Zhang et al., MobiSys 2021) observes that a runtime executes a model as a sequence of *kernels*
(a convolution with its batch norm and activation fused in, a depthwise convolution, a fully connected
layer, a pooling, an element-wise op), so a model's latency is close to the sum of its kernels'
latencies, and one predictor per kernel type -- trained once on sampled kernel configurations measured on
the device -- predicts models of any architecture, not only those of one search space.

Here a network's kernels come from its operator graph (:func:`edgenas.hardware.graph.graph_ops`, which
already folds batch norm and activations into their producer and drops views): every remaining operator
is one :class:`Kernel` of type ``conv`` (groups 1 or grouped), ``dwconv`` (depthwise), ``linear``,
``pool`` or ``eltwise``, described by its configuration (input size, channels, kernel size, stride, ...).
:func:`sample_kernels` draws the configurations to measure: those of random networks of the given
spaces (nn-Meter's prior: configurations real models use) plus perturbed copies that widen the coverage
(its random sampling around them). :meth:`Kernel.module` builds a stand-alone module that runs the
kernel, for measurement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError

#: Kernel types and the names of their configuration numbers.
CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "conv": ("hw", "cin", "cout", "kernel", "stride", "groups"),
    "dwconv": ("hw", "channels", "kernel", "stride"),
    "linear": ("cin", "cout"),
    "pool": ("hw", "channels", "out_hw"),
    "eltwise": ("elements", "inputs"),
}
KERNEL_TYPES = tuple(CONFIG_FIELDS)


@dataclass(frozen=True)
class Kernel:
    """One kernel: its type and configuration (see :data:`CONFIG_FIELDS`); batch 1."""

    type: str
    config: tuple[int, ...]

    @property
    def key(self) -> str:
        return self.type + ":" + "x".join(str(v) for v in self.config)

    @classmethod
    def from_key(cls, key: str) -> Kernel:
        kind, _, rest = key.partition(":")
        if kind not in CONFIG_FIELDS:
            raise EdgenasError(f"unknown kernel type '{kind}' in '{key}'; valid: {', '.join(KERNEL_TYPES)}")
        config = tuple(int(v) for v in rest.split("x"))
        if len(config) != len(CONFIG_FIELDS[kind]):
            raise EdgenasError(f"kernel '{key}' needs {len(CONFIG_FIELDS[kind])} numbers "
                               f"({', '.join(CONFIG_FIELDS[kind])})")
        return cls(kind, config)

    def costs(self) -> tuple[float, float, float]:
        """(multiply-accumulates, activation elements read + written, weight elements)."""
        c = dict(zip(CONFIG_FIELDS[self.type], self.config, strict=True))
        if self.type == "conv":
            out = math.ceil(c["hw"] / c["stride"]) ** 2
            weights = c["cout"] * (c["cin"] // c["groups"]) * c["kernel"] ** 2
            return out * weights, c["cin"] * c["hw"] ** 2 + c["cout"] * out, weights
        if self.type == "dwconv":
            out = math.ceil(c["hw"] / c["stride"]) ** 2
            weights = c["channels"] * c["kernel"] ** 2
            return out * weights, c["channels"] * (c["hw"] ** 2 + out), weights
        if self.type == "linear":
            return c["cin"] * c["cout"], c["cin"] + c["cout"], c["cin"] * c["cout"]
        if self.type == "pool":
            return c["channels"] * c["hw"] ** 2, c["channels"] * (c["hw"] ** 2 + c["out_hw"] ** 2), 0
        return c["elements"], c["elements"] * (c["inputs"] + 1), 0

    def features(self) -> list[float]:
        """The regressor's inputs: the configuration and the log2 of its costs."""
        macs, moved, weights = self.costs()
        return [float(v) for v in self.config] + [math.log2(1 + macs), math.log2(1 + moved), math.log2(1 + weights)]

    def module(self) -> tuple[Any, tuple[int, ...]]:
        """A stand-alone module running this kernel, and its input shape (what the device measures)."""
        from torch import nn

        c = dict(zip(CONFIG_FIELDS[self.type], self.config, strict=True))
        if self.type in ("conv", "dwconv"):
            cin = c.get("cin", c.get("channels"))
            cout = c.get("cout", cin)
            groups = c.get("groups", cin)
            k = c["kernel"]
            conv = nn.Conv2d(cin, cout, k, c["stride"], k // 2, groups=groups, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU()).eval(), (1, cin, c["hw"], c["hw"])
        if self.type == "linear":
            return nn.Sequential(nn.Flatten(), nn.Linear(c["cin"], c["cout"])).eval(), (1, c["cin"], 1, 1)
        if self.type == "pool":
            if c["out_hw"] == 1:
                pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            else:
                pool = nn.AvgPool2d(3, 1 if c["out_hw"] == c["hw"] else 2, 1)
            return pool.eval(), (1, c["channels"], c["hw"], c["hw"])
        return _Eltwise(c["inputs"]).eval(), (1, c["elements"], 1, 1)


def _eltwise_class() -> Any:
    from torch import nn

    class Eltwise(nn.Module):
        """``inputs`` operands combined element by element: the one input read ``inputs`` times (a module
        measured alone has one input; the element count, which decides the time, is the kernel's)."""

        def __init__(self, inputs: int) -> None:
            super().__init__()
            self.inputs = max(1, int(inputs))

        def forward(self, x: Any) -> Any:
            y = x
            for _ in range(self.inputs - 1):
                y = y + x
            return y if self.inputs > 1 else x * 0.5

    return Eltwise


def _Eltwise(inputs: int) -> Any:  # noqa: N802 - a module factory, named like the class it builds
    return _eltwise_class()(inputs)


# ------------------------------------------------------------------------------------------ detection
def kernels_of_model(model: Any, input_shape: tuple[int, ...]) -> list[Kernel]:
    """The kernels of ``model`` on an input of ``input_shape`` (batch 1), in execution order."""
    from edgenas.hardware.graph import graph_ops

    if input_shape[0] != 1:
        raise EdgenasError(f"kernel detection works on batch 1, got input shape {input_shape}")
    graph = graph_ops(model, input_shape)
    kernels = []
    for op in graph.ops:
        if op.kind == "linear" and op.geometry is not None:
            kernels.append(Kernel("linear", op.geometry[:2]))
        elif op.kind == "conv" and op.geometry is not None and op.in_shape is not None:
            cin, cout, kh, _kw, groups, oh, _ow = op.geometry
            hw = int(op.in_shape[-1])
            stride = max(1, round(hw / max(oh, 1)))
            if groups == cin == cout and groups > 1:
                kernels.append(Kernel("dwconv", (hw, cin, kh, stride)))
            else:
                kernels.append(Kernel("conv", (hw, cin, cout, kh, stride, groups)))
        elif op.kind == "pool" and op.in_shape is not None and op.out_shape is not None:
            hw = int(op.in_shape[-1]) if len(op.in_shape) == 4 else 1
            out_hw = int(op.out_shape[-1]) if len(op.out_shape) == 4 else 1
            kernels.append(Kernel("pool", (hw, int(op.in_shape[1]), out_hw)))
        elif op.kind == "eltwise" and op.out_elems > 0:
            inputs = max(1, round(op.in_elems / op.out_elems))
            kernels.append(Kernel("eltwise", (int(op.out_elems), inputs)))
    return kernels


def kernels_of_arch(space: Any, arch: Mapping[str, Any], num_classes: int = 10, in_channels: int = 3) -> list[Kernel]:
    """The kernels of one architecture of ``space`` (built with random weights; nothing is run)."""
    arch = space.validate(arch)
    r = space.resolution(arch)
    return kernels_of_model(space.build(arch, num_classes, in_channels), (1, in_channels, r, r))


# ------------------------------------------------------------------------------------------- sampling
def sample_kernels(prior: Iterable[Kernel], variants: int, seed: int = 0,
                   scales: Sequence[float] = (0.5, 0.75, 1.25, 1.5, 2.0)) -> list[Kernel]:
    """The distinct kernels of ``prior`` and, for each, up to ``variants`` perturbed copies (channels and
    input size scaled by factors drawn from ``scales``, the rest kept), seeded."""
    rng = np.random.default_rng(seed)
    seen: dict[str, Kernel] = {}
    base = list(dict.fromkeys(prior))
    for k in base:
        seen.setdefault(k.key, k)
    for k in base:
        for _ in range(variants):
            v = _perturb(k, rng, scales)
            if v is not None:
                seen.setdefault(v.key, v)
    return list(seen.values())


def _perturb(k: Kernel, rng: np.random.Generator, scales: Sequence[float]) -> Kernel | None:
    c = dict(zip(CONFIG_FIELDS[k.type], k.config, strict=True))

    def scaled(v: int, multiple: int = 1) -> int:
        return max(multiple, int(round(v * float(rng.choice(scales)) / multiple)) * multiple)

    if k.type == "conv":
        groups = c["groups"]
        cin, cout = scaled(c["cin"], groups), scaled(c["cout"], groups)
        return Kernel("conv", (scaled(c["hw"]), cin, cout, c["kernel"], c["stride"], groups))
    if k.type == "dwconv":
        return Kernel("dwconv", (scaled(c["hw"]), scaled(c["channels"]), c["kernel"], c["stride"]))
    if k.type == "linear":
        return Kernel("linear", (scaled(c["cin"]), scaled(c["cout"])))
    if k.type == "pool":
        hw = scaled(c["hw"])
        out_hw = 1 if c["out_hw"] == 1 else (hw if c["out_hw"] == c["hw"] else math.ceil(hw / 2))
        return Kernel("pool", (hw, scaled(c["channels"]), out_hw))
    return Kernel("eltwise", (scaled(c["elements"]), c["inputs"]))
