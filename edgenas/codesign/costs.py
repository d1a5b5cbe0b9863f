"""Costs of a co-design candidate's accelerator, and the accuracy of its network shared across accelerators."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.evaluators import Evaluator


class PECount(Evaluator):
    """``pes``: the number of processing elements of a candidate's accelerator (a silicon budget)."""

    name, unit, direction = "pes", "PEs", "minimize"
    cheap = instant = True

    def __init__(self, space: Any) -> None:
        if not hasattr(space, "hardware_part"):
            raise EdgenasError(f"the cost 'pes' counts a co-designed accelerator's PEs; space '{space.name}' has "
                               f"no accelerator: use --space codesign:{space.name}")
        self.space = space

    def __call__(self, arch: Mapping[str, Any]) -> float:
        hw = self.space.hardware_part(arch)
        return float(hw["pe_rows"] * hw["pe_cols"])


class SharedNetworkAccuracy(Evaluator):
    """An accuracy estimator evaluated once per *network*: co-design candidates that differ only in their
    accelerator share the network's accuracy (training it again would cost time and, being seeded, give
    the same value). ``inner`` is made for the network space and is given the network part only."""

    def __init__(self, inner: Evaluator, space: Any) -> None:
        self.inner, self.space = inner, space
        self.name, self.unit, self.direction = inner.name, inner.unit, inner.direction
        self.cheap, self.instant = inner.cheap, inner.instant
        self._memo: dict[str, float] = {}

    def __call__(self, arch: Mapping[str, Any]) -> float:
        key = self.space.network_key(arch)
        if key not in self._memo:
            self._memo[key] = self.inner(self.space.network_part(arch))
        return self._memo[key]

    def describe(self) -> str:
        return self.inner.describe() + " (once per network, shared by its accelerators)"
