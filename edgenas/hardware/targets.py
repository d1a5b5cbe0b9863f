"""Search targets backed by latency tables, predictors and device profiles.

``--target lut:PATH`` (our JSON table, or OFA's / ProxylessNAS's YAML), ``--target predictor:PATH``
(a saved :class:`~edgenas.hardware.predictor.LatencyPredictor`), ``--target kernels:PATH`` (a kernel-level
predictor, :mod:`edgenas.hardware.kernel_predictor`, for any space), ``--target device:PATH`` (a profile
YAML) and the shipped device names (``--target raspi4``, ``zu9eg``, ...; see
:mod:`edgenas.hardware.devices`). Each evaluator's value is latency in ms; tables and predictors are
``instant`` (vectorised ``evaluate_batch``), so the search may filter candidates with them for free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.evaluators import EvalContext, Evaluator


class LutLatency(Evaluator):
    """Latency (ms) predicted by a layer-wise latency table plus its calibration."""

    name, unit, direction = "latency", "ms", "minimize"
    cheap, instant = True, True

    def __init__(self, model: Any) -> None:
        self.model = model  # a bound edgenas.hardware.lut.LutModel

    def __call__(self, arch: Mapping[str, Any]) -> float:
        return float(self.model.predict([arch])[0])

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        return self.model.predict(archs).tolist()

    def predict(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.model.predict(archs)

    def describe(self) -> str:
        return f"latency [ms] from the latency table {self.model.table.source} ({self.model.table.built_for()})"


class PredictedLatency(Evaluator):
    """Latency (ms) from a fitted network-wise latency predictor."""

    name, unit, direction = "latency", "ms", "minimize"
    cheap, instant = True, True

    def __init__(self, predictor: Any, source: str = "") -> None:
        self.predictor, self.source = predictor, source

    def __call__(self, arch: Mapping[str, Any]) -> float:
        return float(self.predictor.predict([arch])[0])

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        return self.predictor.predict(archs).tolist()

    def describe(self) -> str:
        return f"latency [ms] from the {self.predictor.model} latency predictor {self.source}"


def _classes(ctx: EvalContext) -> tuple[int, int]:
    return ctx.data.num_classes, ctx.data.in_channels


def lut_target(path: str, ctx: EvalContext) -> Evaluator:
    """The factory of ``lut:PATH``."""
    from edgenas.hardware.lut import LatencyTable

    if not path:
        raise EdgenasError("lut: needs a path, e.g. --target lut:lut.json")
    table = LatencyTable.load(path)
    nc, ic = _classes(ctx)
    return LutLatency(table.bind(ctx.space, nc, ic))


def predictor_target(path: str, ctx: EvalContext) -> Evaluator:
    """The factory of ``predictor:PATH``."""
    from edgenas.hardware.predictor import LatencyPredictor

    if not path:
        raise EdgenasError("predictor: needs a path, e.g. --target predictor:latency.npz")
    pred = LatencyPredictor.load(path, ctx.space)
    nc, ic = _classes(ctx)
    if (pred.num_classes, pred.in_channels) != (nc, ic):
        raise EdgenasError(
            f"latency predictor '{path}' was trained on networks with {pred.num_classes} classes and "
            f"{pred.in_channels} input channels; the data here has {nc} and {ic}"
        )
    return PredictedLatency(pred, path)


class KernelLatency(Evaluator):
    """Latency (ms) from a kernel-level predictor (nn-Meter): the calibrated sum of the network's kernels'
    predicted latencies. Works for any traceable space; each call traces the network (tens of ms), so it
    is cheap but not ``instant``."""

    name, unit, direction = "latency", "ms", "minimize"
    cheap, instant = True, False

    def __init__(self, predictor: Any, space: Any, num_classes: int, in_channels: int, source: str = "") -> None:
        self.predictor, self.space, self.source = predictor, space, source
        self.num_classes, self.in_channels = num_classes, in_channels

    def __call__(self, arch: Mapping[str, Any]) -> float:
        from edgenas.hardware.kernels import kernels_of_arch

        return self.predictor.predict_network(kernels_of_arch(self.space, arch, self.num_classes, self.in_channels))

    def describe(self) -> str:
        return f"latency [ms] from the kernel-level predictor {self.source}"


def kernels_target(path: str, ctx: EvalContext) -> Evaluator:
    """The factory of ``kernels:PATH``."""
    from edgenas.hardware.kernel_predictor import KernelPredictor

    if not path:
        raise EdgenasError("kernels: needs a path, e.g. --target kernels:kernels.npz")
    nc, ic = _classes(ctx)
    return KernelLatency(KernelPredictor.load(path), ctx.space, nc, ic, path)


def device_target(name_or_path: str, ctx: EvalContext) -> Evaluator:
    """A device profile as a target: NB201 column, else its table, else its predictor, else the roofline."""
    from edgenas.hardware.devices import load_device

    dev = load_device(name_or_path)
    if dev.nb201_column and ctx.space.name == "nb201":
        from edgenas.evaluators import make_target

        return make_target(f"nb201:{dev.nb201_column}", ctx)
    if dev.lut:
        return lut_target(str(dev.lut_path()), ctx)
    if dev.predictor:
        return predictor_target(str(dev.predictor_path()), ctx)
    from edgenas.hardware.roofline import RooflineLatency

    nc, ic = _classes(ctx)
    return RooflineLatency(ctx.space, dev, nc, ic)


def named_device_factories() -> dict[str, Any]:
    """``{device name: factory}`` for every shipped profile (registered as plain ``--target`` names)."""
    from edgenas.hardware.devices import list_devices

    return {name: (lambda arg, ctx, name=name: device_target(name, ctx)) for name in list_devices()}


def param_bytes_cost(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.memory import ParamBytes

    return ParamBytes(ctx.space, *_classes(ctx), precision=arg or "fp32")


def peak_memory_cost(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.memory import PeakMemory

    return PeakMemory(ctx.space, *_classes(ctx), precision=arg or "fp32")
