"""Kernels: the units an inference engine runs, read from any network, and sampled to train predictors.

nn-Meter (Zhang et al., MobiSys 2021) observes that a runtime executes a model as a sequence of *kernels*
(a convolution with its batch norm and activation fused in, a depthwise convolution, a fully connected
layer, a pooling, an element-wise op), so a model's latency is close to the sum of its kernels'
latencies, and one predictor per kernel type -- trained once on sampled kernel configurations measured on
the device -- predicts models of any architecture, not only those of one search space.

Here a network's kernels come from the graph the runtime gets (the model exported to ONNX, constant-folded
and pruned), with batch norm and activations fused into the convolution or linear layer that feeds them
and shape arithmetic free: every remaining operator is one :class:`Kernel` of type ``conv`` (groups 1 or
grouped), ``dwconv`` (depthwise), ``linear``, ``pool`` or ``eltwise``, described by its configuration
(input size, channels, kernel size, stride, ...).
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
        return _eltwise_module(max(1, c["inputs"])).eval(), (1, c["elements"], 1, 1)


def _eltwise_module(inputs: int) -> Any:
    """``inputs`` operands combined element by element: the one input read ``inputs`` times (a module
    measured alone has one input; the element count, which decides the time, is the kernel's)."""
    from torch import nn

    class Eltwise(nn.Module):
        def forward(self, x: Any) -> Any:
            y = x
            for _ in range(inputs - 1):
                y = y + x
            return y if inputs > 1 else x * 0.5

    return Eltwise()


# ------------------------------------------------------------------------------------------ detection
#: ONNX operators folded into the kernel that produces their input when they are its only consumer
#: (the runtime fuses them), else run as element-wise kernels of their own.
FUSABLE = ("Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "LeakyRelu", "BatchNormalization",
           "Elu", "Selu", "Softplus", "Gelu")
#: ONNX operators that move no data (shape arithmetic, views, constants).
FREE = ("Shape", "Reshape", "Flatten", "Gather", "Unsqueeze", "Squeeze", "Concat", "Constant", "Identity",
        "ConstantOfShape", "Cast", "Slice", "Dropout")
POOLS = ("GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool", "ReduceMean", "ReduceMax")


def kernels_of_model(model: Any, input_shape: tuple[int, ...]) -> list[Kernel]:
    """The kernels of ``model`` on an input of ``input_shape`` (batch 1), in execution order.

    Read from the model as the runtime gets it: exported to ONNX (constant folding and dead-code removal
    included, so a branch whose result is never used, or only multiplied into zeros, costs nothing), batch
    norm and activations folded into the convolution or linear layer that feeds them, shape arithmetic
    free.
    """
    import tempfile

    import onnx

    from edgenas.hardware.measure import export_onnx

    if len(input_shape) != 4 or input_shape[0] != 1:
        raise EdgenasError(f"kernel detection works on images at batch 1 (1, C, H, W), got input shape {input_shape}")
    with tempfile.TemporaryDirectory(prefix="edgenas-kernels-") as tmp:
        path = f"{tmp}/model.onnx"
        export_onnx(model, path, input_shape[2], input_shape[1], 1)
        graph = onnx.shape_inference.infer_shapes(onnx.load(path)).graph
    return _kernels_of_onnx(graph)


def _kernels_of_onnx(graph: Any) -> list[Kernel]:
    from onnx import numpy_helper

    shapes: dict[str, tuple[int, ...]] = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = tuple(int(d.dim_value) for d in dims)
    weights = {t.name: tuple(numpy_helper.to_array(t).shape) for t in graph.initializer}
    constants = set(weights)
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producer_kind: dict[str, str] = {}
    kernels: list[Kernel] = []
    dynamic = {v.name for v in graph.input if v.name not in weights}  # what depends on the network's input
    for node in graph.node:
        if not any(name in dynamic for name in node.input):
            continue  # computed from constants only: the runtime folds it when it loads the model
        dynamic.update(node.output)
        op = node.op_type
        attrs = {a.name: a for a in node.attribute}
        out = node.output[0] if node.output else ""
        if op in FREE:
            continue
        if op in FUSABLE:
            src = node.input[0]
            if producer_kind.get(src) in ("conv", "linear") and consumers.get(src, 0) == 1:
                producer_kind[out] = producer_kind[src]  # fused: the activation runs inside that kernel
                continue
        if op == "Conv":
            x, w = shapes.get(node.input[0]), weights.get(node.input[1])
            if x is None or w is None:
                raise EdgenasError(f"cannot read the shapes of ONNX node '{node.name}' ({op})")
            groups = int(attrs["group"].i) if "group" in attrs else 1
            k = int(w[2])
            stride = int(attrs["strides"].ints[0]) if "strides" in attrs else 1
            cin, cout, hw = int(x[1]), int(w[0]), int(x[-1])
            kernels.append(Kernel("dwconv", (hw, cin, k, stride)) if groups == cin == cout and groups > 1
                           else Kernel("conv", (hw, cin, cout, k, stride, groups)))
            producer_kind[out] = "conv"
        elif op in ("Gemm", "MatMul"):
            w = weights.get(node.input[1])
            if w is None:
                raise EdgenasError(f"cannot read the weight of ONNX node '{node.name}' ({op})")
            trans_b = op == "Gemm" and "transB" in attrs and attrs["transB"].i == 1
            cin, cout = (int(w[1]), int(w[0])) if trans_b else (int(w[0]), int(w[1]))
            kernels.append(Kernel("linear", (cin, cout)))
            producer_kind[out] = "linear"
        elif op in POOLS:
            x, y = shapes.get(node.input[0]), shapes.get(out)
            if x is None or y is None or len(x) != 4:
                raise EdgenasError(f"cannot read the shapes of ONNX node '{node.name}' ({op})")
            out_hw = int(y[-1]) if len(y) == 4 else 1
            kernels.append(Kernel("pool", (int(x[-1]), int(x[1]), out_hw)))
            producer_kind[out] = "pool"
        else:
            y = shapes.get(out)
            elements = int(np.prod(y)) if y else 0
            if elements <= 0:
                continue
            operands = sum(1 for name in node.input if name and name not in constants)
            kernels.append(Kernel("eltwise", (elements, max(1, operands))))
            producer_kind[out] = "eltwise"
    return kernels


def kernels_of_arch(space: Any, arch: Mapping[str, Any], num_classes: int = 10, in_channels: int = 3) -> list[Kernel]:
    """The kernels of one architecture of ``space`` (built with random weights; nothing is run)."""
    arch = space.validate(arch)
    r = space.resolution(arch)
    return kernels_of_model(space.build(arch, num_classes, in_channels), (1, in_channels, r, r))


# ------------------------------------------------------------------------------------------- sampling
def sample_kernels(prior: Iterable[Kernel], variants: int, seed: int = 0,
                   scales: Sequence[float] = (0.5, 0.75, 1.25, 1.5, 2.0), random_per_type: int = 0) -> list[Kernel]:
    """The distinct kernels of ``prior``; for each, up to ``variants`` perturbed copies (channels and input
    size scaled by factors drawn from ``scales``, the rest kept); and ``random_per_type`` kernels per type
    drawn across the ranges the prior spans (sizes log-uniform between half its smallest and twice its
    largest value, kernel sizes, strides and operand counts among those it uses), so kernels of networks
    outside the prior are covered too. Seeded."""
    rng = np.random.default_rng(seed)
    seen: dict[str, Kernel] = {}
    base = list(dict.fromkeys(prior))
    for k in base:
        seen.setdefault(k.key, k)
    for k in base:
        for _ in range(variants):
            v = _perturb(k, rng, scales)
            seen.setdefault(v.key, v)
    for kind in KERNEL_TYPES:
        of_kind = [k for k in base if k.type == kind]
        for v in _across_ranges(of_kind, random_per_type, rng):
            seen.setdefault(v.key, v)
    return list(seen.values())


#: Configuration fields drawn from the values the prior uses (the rest are sizes, drawn log-uniformly).
_CATEGORICAL = {"kernel", "stride", "groups", "inputs"}


def _across_ranges(kernels: Sequence[Kernel], n: int, rng: np.random.Generator) -> list[Kernel]:
    if not kernels or n <= 0:
        return []
    kind = kernels[0].type
    fields = CONFIG_FIELDS[kind]
    columns = {f: [k.config[i] for k in kernels] for i, f in enumerate(fields)}
    out = []
    for _ in range(n):
        c: dict[str, int] = {}
        for f in fields:
            values = columns[f]
            if f in _CATEGORICAL or f == "out_hw":
                c[f] = int(rng.choice(values))
            else:
                lo, hi = max(1.0, min(values) / 2), max(values) * 2.0
                c[f] = max(1, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))
        if kind == "conv":
            c["groups"] = 1
        if kind == "pool":  # global, same-size or halving, as in the prior kernel drawn
            c["out_hw"] = 1 if c["out_hw"] == 1 else int(rng.choice([c["hw"], math.ceil(c["hw"] / 2)]))
        out.append(Kernel(kind, tuple(c[f] for f in fields)))
    return out


def _perturb(k: Kernel, rng: np.random.Generator, scales: Sequence[float]) -> Kernel:
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
