"""Memory of a network without running it: parameter bytes at a precision and peak activation memory.

Peak activation memory is what decides whether a network fits a microcontroller's SRAM (MCUNet, Lin et
al., NeurIPS 2020): the largest total size of the activation tensors alive at once while the network
runs, with batch norm and activations fused, reshapes free and element-wise ops in place (see
:mod:`edgenas.hardware.graph` for the rules). For any traceable network it comes from the ``torch.fx``
graph with shapes propagated on the ``meta`` device; for MBV3 spaces from the analytic layer index
(:meth:`edgenas.hardware.layers.Layer.peak_elems`), vectorised over many architectures (a test keeps
the two equal). Parameter bytes are the parameter count times the bytes per element of the precision.

The evaluators ``param_bytes`` and ``peak_memory`` (bytes, minimise) make both usable as constraints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.evaluators import Evaluator
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.mbv3 import MBV3Space

BYTES_PER_ELEMENT = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def bytes_per_element(precision: str) -> float:
    if precision not in BYTES_PER_ELEMENT:
        raise EdgenasError(f"unknown precision '{precision}'; valid: {', '.join(BYTES_PER_ELEMENT)}")
    return BYTES_PER_ELEMENT[precision]


def model_memory(model: Any, input_shape: tuple[int, ...], precision: str = "fp32") -> dict[str, Any]:
    """Parameter bytes, peak activation bytes and the op where the peak happens, from the graph."""
    from edgenas.hardware.graph import graph_ops

    b = bytes_per_element(precision)
    graph = graph_ops(model, input_shape)
    peak, where = graph.peak_live_elems()
    params = sum(p.numel() for p in model.parameters())
    return {"precision": precision, "params": params, "param_bytes": params * b,
            "peak_activation_elems": peak, "peak_activation_bytes": peak * b, "peak_at": where}


def arch_memory(space: SearchSpace, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3,
                precision: str = "fp32") -> dict[str, Any]:
    """:func:`model_memory` of an architecture (built with random weights; nothing is run)."""
    arch = space.validate(arch)
    r = space.resolution(arch)
    return model_memory(space.build(arch, num_classes, in_channels), (1, in_channels, r, r), precision)


class _MemoryCost(Evaluator):
    direction, unit = "minimize", "bytes"
    cheap = True

    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int = 3, precision: str = "fp32") -> None:
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.precision, self.bpe = precision, bytes_per_element(precision)
        self.layers = None
        if isinstance(space, MBV3Space):
            from edgenas.hardware.layers import MBV3Layers

            self.layers = MBV3Layers(space, num_classes, in_channels)
            self.instant = True
        self._memo: dict[str, float] = {}

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        if self.layers is None:
            return [self(a) for a in archs]
        return self._vectorised(self.layers.batch_layer_ids(archs)).tolist()

    def __call__(self, arch: Mapping[str, Any]) -> float:
        if self.layers is not None:
            return float(self._vectorised(self.layers.batch_layer_ids([arch]))[0])
        key = self.space.key(arch)
        if key not in self._memo:
            self._memo[key] = float(arch_memory(self.space, arch, self.num_classes, self.in_channels,
                                                self.precision)[self.field])
        return self._memo[key]

    field = ""

    def _vectorised(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} [{self.unit}] at {self.precision} ({self.direction})"


class ParamBytes(_MemoryCost):
    """Bytes of the parameters at a precision (BN parameters included, as stored before folding)."""

    name, field = "param_bytes", "param_bytes"

    def _vectorised(self, ids: np.ndarray) -> np.ndarray:
        assert self.layers is not None
        return self.layers.sum(self.layers.layer_params, ids) * self.bpe


class PeakMemory(_MemoryCost):
    """Peak activation memory in bytes at a precision (MCUNet's accounting; see the module docstring)."""

    name, field = "peak_memory", "peak_activation_bytes"

    def _vectorised(self, ids: np.ndarray) -> np.ndarray:
        assert self.layers is not None
        return np.append(self.layers.layer_peak, 0.0)[ids].max(axis=1) * self.bpe
