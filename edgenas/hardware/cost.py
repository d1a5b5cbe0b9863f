"""Cost evaluators computed from the built network: parameters, MACs and measured latency."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from edgenas.evaluators import Evaluator
from edgenas.hardware.flops import count_macs, count_params
from edgenas.hardware.measure import LatencyMeter, MeasureSettings
from edgenas.spaces.base import SearchSpace


class _BuiltCost(Evaluator):
    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int = 3) -> None:
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self._memo: dict[str, float] = {}

    def __call__(self, arch: Mapping[str, Any]) -> float:
        key = self.space.key(arch)
        if key not in self._memo:
            model = self.space.build(arch, self.num_classes, self.in_channels)
            self._memo[key] = float(self._count(model, self.space.resolution(self.space.validate(arch))))
        return self._memo[key]

    def _count(self, model: Any, resolution: int) -> float:
        raise NotImplementedError


class ParamsCost(_BuiltCost):
    """Trainable parameters of the built network."""

    name, unit, direction = "params", "count", "minimize"

    def _count(self, model: Any, resolution: int) -> float:
        return count_params(model)


class MacsCost(_BuiltCost):
    """Multiply-accumulates of one forward pass at the architecture's resolution (reported as ``flops``
    in the CLI's metric names, as the field does, but counted as MACs)."""

    name, unit, direction = "flops", "MACs", "minimize"

    def _count(self, model: Any, resolution: int) -> float:
        return count_macs(model, resolution, self.in_channels)


class MeasuredLatency(Evaluator):
    """Latency measured on this CPU (see :mod:`edgenas.hardware.measure`)."""

    name, unit, direction = "latency", "ms", "minimize"

    def __init__(
        self, space: SearchSpace, num_classes: int, in_channels: int = 3,
        settings: MeasureSettings | None = None, cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.meter = LatencyMeter(space, num_classes, in_channels, settings, cache_dir)

    def __call__(self, arch: Mapping[str, Any]) -> float:
        return self.meter(arch)

    def describe(self) -> str:
        s = self.meter.settings
        return f"latency [ms] measured here ({s.backend}, {s.threads} thread(s), batch {s.batch})"
