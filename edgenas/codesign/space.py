"""A joint network + accelerator search space: NAAS-style co-design on one ask/tell interface.

Lin, Yang and Han, "NAAS: Neural Accelerator Architecture Search" (DAC 2021) search the accelerator (PE
array size, buffer sizes, dataflow / loop order) together with the network, because the best network
depends on the accelerator and the best accelerator on the network. Here the accelerator's sizing
decisions are extra dimensions of the network's space -- ``hw.pe_rows``, ``hw.pe_cols``, ``hw.buffer_kb`` and
``hw.dataflow`` -- so every strategy (evolution, NSGA-II, random ...) co-searches both at once, and the
target ``accel:BASE`` evaluates each candidate network on its own candidate accelerator (``BASE`` supplies
what is not searched: clock, DRAM bandwidth, word size, access energies). A simplification of NAAS: one flat
joint space searched by the strategy of your choice, where NAAS nests a network search inside an
evolutionary accelerator search and also searches the compiler's loop order and tiling.

``codesign:SPACE`` in ``--space`` (``codesign:mbv3-tiny``); the accelerator choices can be narrowed in
Python with :meth:`CodesignSpace.create`. A PE budget is a constraint on the cost ``pes``
(``--constraint pes<=168``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.spaces.base import Arch, Dimension, SearchSpace

DATAFLOWS = ("weight_stationary", "output_stationary", "row_stationary")
#: the accelerator's searched dimensions and their default choices (smallest first)
HW_CHOICES: dict[str, tuple[Any, ...]] = {
    "hw.pe_rows": (8, 12, 16, 24, 32),
    "hw.pe_cols": (8, 14, 16, 24, 32),
    "hw.buffer_kb": (32, 64, 108, 256, 512),
    "hw.dataflow": DATAFLOWS,
}


@dataclass
class CodesignSpace(SearchSpace):
    """The dimensions of ``network`` followed by the accelerator's (see the module docstring)."""

    network: SearchSpace | None = None
    hw_names: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def create(cls, network: SearchSpace, choices: Mapping[str, Sequence[Any]] | None = None) -> CodesignSpace:
        hw = {**HW_CHOICES, **{k: tuple(v) for k, v in (choices or {}).items()}}
        unknown = sorted(set(hw) - set(HW_CHOICES))
        if unknown:
            raise EdgenasError(f"unknown accelerator dimension(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(HW_CHOICES)}")
        bad = [f for f in hw["hw.dataflow"] if f not in DATAFLOWS]
        if bad:
            raise EdgenasError(f"unknown dataflow '{bad[0]}'; valid: {', '.join(DATAFLOWS)}")
        if isinstance(network, CodesignSpace):
            raise EdgenasError("a codesign space wraps a network space, not another codesign space")
        dims = [*network.dimensions,
                *(Dimension(name, choices, name.replace("hw.", "accelerator "), ordered=name != "hw.dataflow")
                  for name, choices in hw.items())]
        rule = network.is_active
        per_hw = 1
        for choices in hw.values():
            per_hw *= len(choices)
        return cls(name=f"codesign:{network.name}", dimensions=dims, builder=network.builder,
                   is_active=lambda name, partial: name.startswith("hw.") or rule(name, partial),
                   default_resolution=network.default_resolution, config=dict(network.config),
                   counter=lambda: network.size() * per_hw,
                   description=f"{network.name} networks x accelerators (PE array, buffer, dataflow)",
                   network=network, hw_names=tuple(hw))

    # ------------------------------------------------------------- the two parts
    def network_part(self, arch: Mapping[str, Any]) -> Arch:
        return {k: v for k, v in arch.items() if not k.startswith("hw.")}

    def hardware_part(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        a = self.validate(arch)
        return {"pe_rows": int(a["hw.pe_rows"]), "pe_cols": int(a["hw.pe_cols"]),
                "buffer_kb": float(a["hw.buffer_kb"]), "dataflow": str(a["hw.dataflow"])}

    def accelerator(self, arch: Mapping[str, Any], base: Any) -> Any:
        """The candidate accelerator of ``arch``: ``base`` (an :class:`~edgenas.hardware.accelerator.Accelerator`)
        with the searched parameters replaced."""
        hw = self.hardware_part(arch)
        name = f"{base.name}[{hw['pe_rows']}x{hw['pe_cols']},{hw['buffer_kb']:g}KB,{hw['dataflow']}]"
        return base.with_(name=name, **hw)

    def network_key(self, arch: Mapping[str, Any]) -> str:
        assert self.network is not None
        return self.network.key(self.network_part(arch))

    # -------------------------------------------------------- delegated to the network
    def resolution(self, arch: Mapping[str, Any]) -> int:
        assert self.network is not None
        return self.network.resolution(self.network_part(arch))

    def build(self, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3, seed: int = 0) -> Any:
        assert self.network is not None
        self.validate(arch)  # the whole arch, accelerator included, is checked
        return self.network.build(self.network_part(arch), num_classes, in_channels, seed)

    def extremes(self) -> list[Arch]:
        """The candidates that minimise a cost: the smallest network on the smallest accelerator (fewest PEs)
        and on the largest one (fastest), each with every dataflow."""
        assert self.network is not None
        small = self.network.extreme(smallest=True)
        out = []
        for pick in (0, -1):
            for flow in self["hw.dataflow"].choices:
                hw = {n: self[n].choices[pick] for n in self.hw_names if n != "hw.dataflow"}
                out.append(self.validate({**small, **hw, "hw.dataflow": flow}))
        return out


def codesign_space(network: str | SearchSpace) -> CodesignSpace:
    """``codesign:NAME`` of :func:`edgenas.spaces.get_space`."""
    from edgenas.spaces import get_space

    return CodesignSpace.create(get_space(network))
