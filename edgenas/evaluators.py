"""Evaluators: named functions of an architecture with a unit and a direction.

Accuracy estimators (train from scratch, zero-shot proxies, tabular look-ups, supernet weights) and cost
models (params, MACs, measured latency, lookup tables, predictors) share one small interface, so the
experiment loop, constraints and objectives treat them alike.

``make_estimator(spec, ctx)`` and ``make_target(spec, ctx)`` turn a CLI spec (``train``,
``proxy:zen``, ``cpu``, ``lut:PATH``) into an evaluator. Plain names live in ``ESTIMATORS`` /
``TARGETS``; ``prefix:argument`` specs in ``ESTIMATOR_PREFIXES`` / ``TARGET_PREFIXES``. Each entry is a
factory ``(argument, context) -> Evaluator`` that imports what it needs lazily.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from edgenas.errors import EdgenasError, unknown_name
from edgenas.spaces.base import SearchSpace

Direction = Literal["maximize", "minimize"]


class Evaluator(ABC):
    """A metric of an architecture. Subclasses set ``name``, ``unit`` and ``direction``.

    ``cheap`` evaluators (counts, look-ups, measured latency) run before a constraint check; the
    expensive accuracy estimator runs only on candidates that meet every constraint. ``instant``
    evaluators (look-up tables, predictors: well under a millisecond) may also be used by a strategy to
    filter candidates before they cost an evaluation.
    """

    name: str = "metric"
    unit: str = ""
    direction: Direction = "maximize"
    cheap: bool = True
    instant: bool = False

    @abstractmethod
    def __call__(self, arch: Mapping[str, Any]) -> float:
        """The metric's value for one architecture."""

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        """Values for many architectures (override where a vectorised path is faster)."""
        return [self(a) for a in archs]

    def describe(self) -> str:
        return f"{self.name} [{self.unit}] ({self.direction})"


@dataclass
class EvalContext:
    """What evaluator factories may need: the space, the data (loaded on first use), seeds, settings."""

    space: SearchSpace
    data_spec: str = "digits"
    seed: int = 0
    epochs: int = 2
    batch_size: int = 32
    backend: str = "onnxruntime"
    threads: int = 1
    cache_dir: str | None = None
    weights_dir: str | None = None
    bench_data: str | None = None
    max_train: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def data(self) -> Any:
        from edgenas.data import load_dataset

        d = load_dataset(self.data_spec)
        return d.subset(self.max_train) if self.max_train else d

    def shared_data_dir(self) -> str:
        """The reference-data folder: ``bench_data`` or ``$EDGENAS_DATA``; a clear error when absent."""
        path = self.bench_data or os.environ.get("EDGENAS_DATA")
        if not path or not os.path.isdir(path):
            raise EdgenasError(
                "reference data not found: pass --bench-data PATH or set EDGENAS_DATA "
                "(e.g. EDGENAS_DATA=../shared/data)"
            )
        return path


Factory = Callable[[str, EvalContext], Evaluator]


def _train(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.estimators.train import TrainEstimator

    return TrainEstimator(ctx.space, ctx.data, epochs=ctx.epochs, batch_size=ctx.batch_size, seed=ctx.seed,
                          weights_dir=ctx.weights_dir)


def _net2net(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.estimators.net2net import Net2NetEstimator
    from edgenas.estimators.train import TrainRecipe

    return Net2NetEstimator(ctx.space, ctx.data, TrainRecipe(epochs=ctx.epochs, batch_size=ctx.batch_size),
                            seed=ctx.seed, weights_dir=ctx.weights_dir)


def _params(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.cost import ParamsCost

    return ParamsCost(ctx.space, ctx.data.num_classes, ctx.data.in_channels)


def _macs(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.cost import MacsCost

    return MacsCost(ctx.space, ctx.data.num_classes, ctx.data.in_channels)


def _cpu(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.cost import MeasuredLatency
    from edgenas.hardware.measure import MeasureSettings

    settings = MeasureSettings(backend=ctx.backend, threads=ctx.threads)
    return MeasuredLatency(ctx.space, ctx.data.num_classes, ctx.data.in_channels, settings, ctx.cache_dir)


def _tabular(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.estimators.tabular import make_tabular_estimator

    return make_tabular_estimator(arg, ctx)


def _proxy(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.estimators.proxies.estimator import make_proxy_estimator

    return make_proxy_estimator(arg, ctx)


def _nb201_device(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.tabular import make_nb201_target

    return make_nb201_target(arg, ctx)


def _lut(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.targets import lut_target

    return lut_target(arg, ctx)


def _predictor(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.targets import predictor_target

    return predictor_target(arg, ctx)


def _device(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.targets import device_target

    return device_target(arg, ctx)


def _named_devices() -> dict[str, Factory]:
    from edgenas.hardware.devices import list_devices

    return {name: (lambda arg, ctx, name=name: _device(name, ctx)) for name in list_devices()}


def _accelerator(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.accelerator import accelerator_target

    return accelerator_target(arg, ctx)


def _pes(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.codesign.costs import PECount

    return PECount(ctx.space)


def _param_bytes(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.targets import param_bytes_cost

    return param_bytes_cost(arg, ctx)


def _peak_memory(arg: str, ctx: EvalContext) -> Evaluator:
    from edgenas.hardware.targets import peak_memory_cost

    return peak_memory_cost(arg, ctx)


ESTIMATORS: dict[str, Factory] = {"train": _train, "net2net": _net2net}
COSTS: dict[str, Factory] = {"params": _params, "flops": _macs, "param_bytes": _param_bytes,
                             "peak_memory": _peak_memory, "pes": _pes}
ESTIMATOR_PREFIXES: dict[str, Factory] = {
    "tabular": _tabular,
    "proxy": _proxy,
    # OFA supernet weights + BN recalibration (lazy import: the factory lives in edgenas/supernets/estimator.py)
    "supernet": lambda arg, ctx: __import__("edgenas.supernets.estimator", fromlist=["_"]).supernet_estimator(
        arg, ctx),
    # SMASH HyperNet-generated weights (NB201 cells)
    "hypernet": lambda arg, ctx: __import__("edgenas.estimators.hypernet", fromlist=["_"]).hypernet_estimator(
        arg, ctx),
}
TARGETS: dict[str, Factory] = {"cpu": _cpu, **_named_devices()}
TARGET_PREFIXES: dict[str, Factory] = {"nb201": _nb201_device, "lut": _lut, "predictor": _predictor,
                                       "device": _device, "accel": _accelerator,
                                       # nn-Meter-style kernel-level predictor (any traceable space)
                                       "kernels": lambda arg, ctx: __import__(
                                           "edgenas.hardware.targets", fromlist=["_"]).kernels_target(arg, ctx)}


def _resolve(
    kind: str, spec: str, plain: dict[str, Factory], prefixed: dict[str, Factory], ctx: EvalContext
) -> Evaluator:
    if spec in plain:
        return plain[spec]("", ctx)
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in prefixed:
        return prefixed[prefix](arg, ctx)
    valid = list(plain) + [f"{p}:..." for p in prefixed]
    raise unknown_name(kind, spec, valid)


def accuracy_label(spec: str) -> str:
    """What the ``accuracy`` objective holds for the estimator ``spec``: a validation accuracy in %, or,
    for a zero-shot proxy, a unitless score (higher is better) that only ranks architectures."""
    return f"{spec} score" if spec.split(":", 1)[0] == "proxy" else "accuracy (%)"


def make_estimator(spec: str, ctx: EvalContext) -> Evaluator:
    """The accuracy estimator named by ``spec`` (``train``, ``proxy:zen``, ``tabular:nb201``, ...)."""
    return _resolve("estimator", spec, ESTIMATORS, ESTIMATOR_PREFIXES, ctx)


def make_cost(metric: str, ctx: EvalContext) -> Evaluator:
    """A cost computed from the built network: ``params`` or ``flops`` (MACs)."""
    if metric not in COSTS:
        raise unknown_name("cost metric", metric, COSTS)
    return COSTS[metric]("", ctx)


def make_target(spec: str, ctx: EvalContext) -> Evaluator:
    """The latency model of a device target (``cpu``, ``lut:PATH``, ``nb201:raspi4``, ...)."""
    return _resolve("target", spec, TARGETS, TARGET_PREFIXES, ctx)


def valid_estimators() -> list[str]:
    return list(ESTIMATORS) + [f"{p}:..." for p in ESTIMATOR_PREFIXES]


def valid_targets() -> list[str]:
    return list(TARGETS) + [f"{p}:..." for p in TARGET_PREFIXES]
