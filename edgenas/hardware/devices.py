"""Named device profiles: peak compute, memory bandwidth, and where one exists, a latency table or predictor.

A profile is a small YAML file (``edgenas/hardware/devices/*.yaml`` ships a few well-known edge targets,
each citing where its figures come from; a user passes their own as ``--target device:PATH``)::

    name: raspi4
    title: Raspberry Pi 4 Model B
    kind: cpu
    default_precision: fp32
    peak_gops: {fp32: 48.0}          # theoretical peak per precision, 1e9 operations per second
    memory_bandwidth_gbs: 12.8       # theoretical DRAM bandwidth, GB/s
    lut: PATH                         # optional: a latency table for this device (``${EDGENAS_DATA}`` expands)
    predictor: PATH                   # optional: a latency predictor (.npz)
    nb201_column: raspi4              # optional: its column in the shared NB201 latency table
    sources: [...]

As a search target a profile answers with, in this order: the NB201 table column (NB201 space), its
latency table, its predictor, or else the roofline estimate from peak compute and bandwidth (a lower
bound on latency, see :mod:`edgenas.hardware.roofline`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgenas.errors import EdgenasError, unknown_name

DEVICE_DIR = Path(__file__).resolve().parent / "devices"
_VAR = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class DeviceProfile:
    """A named device (see the module docstring)."""

    name: str
    title: str = ""
    kind: str = "cpu"
    default_precision: str = "fp32"
    peak_gops: dict[str, float] = field(default_factory=dict)
    memory_bandwidth_gbs: float | None = None
    lut: str | None = None
    predictor: str | None = None
    nb201_column: str | None = None
    sources: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def peak(self, precision: str | None = None) -> float:
        """Peak compute in GOPS at ``precision`` (default: the profile's)."""
        precision = precision or self.default_precision
        if precision not in self.peak_gops:
            have = ", ".join(self.peak_gops) or "none"
            raise EdgenasError(f"device '{self.name}' has no peak compute for {precision} (has: {have})")
        return float(self.peak_gops[precision])

    def bandwidth(self) -> float:
        if not self.memory_bandwidth_gbs:
            raise EdgenasError(f"device '{self.name}' has no memory bandwidth in its profile ({self.path})")
        return float(self.memory_bandwidth_gbs)

    def resolve(self, value: str | None) -> str | None:
        """Expand ``${VAR}`` (e.g. ``${EDGENAS_DATA}``; a relative value is taken from the working directory,
        as the user typed it) and make a path written relative in the profile relative to the profile."""
        if not value:
            return None

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                raise EdgenasError(
                    f"device '{self.name}' needs ${{{m.group(1)}}} for '{value}'; set it (e.g. "
                    f"{m.group(1)}=../shared/data)"
                )
            return os.path.abspath(os.environ[m.group(1)])

        out = _VAR.sub(repl, value)
        p = Path(out)
        if not p.is_absolute() and self.path:
            p = Path(self.path).parent / p
        return str(p)

    def lut_path(self) -> str | None:
        return self.resolve(self.lut)

    def predictor_path(self) -> str | None:
        return self.resolve(self.predictor)


def list_devices() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in DEVICE_DIR.glob("*.yaml"))


def load_device(name_or_path: str) -> DeviceProfile:
    """A shipped profile by name, or a profile YAML by path."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.exists()):
        if name_or_path not in list_devices():
            raise unknown_name("device", name_or_path, list_devices())
        p = DEVICE_DIR / f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EdgenasError(f"device profile '{p}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise EdgenasError(f"device profile '{p}' needs at least 'name:' (see edgenas/hardware/devices/*.yaml)")
    return _profile(data, p)


def _profile(data: dict[str, Any], path: Path) -> DeviceProfile:
    peaks = data.get("peak_gops") or {}
    if not isinstance(peaks, dict) or not all(isinstance(v, int | float) and v > 0 for v in peaks.values()):
        raise EdgenasError(f"device profile '{path}': peak_gops must map precisions to positive numbers")
    bw = data.get("memory_bandwidth_gbs")
    if bw is not None and not (isinstance(bw, int | float) and bw > 0):
        raise EdgenasError(f"device profile '{path}': memory_bandwidth_gbs must be a positive number")
    notes = {k: str(data[k]) for k in ("peak_derivation", "bandwidth_derivation") if k in data}
    return DeviceProfile(
        name=data["name"], title=str(data.get("title", "")), kind=str(data.get("kind", "cpu")),
        default_precision=str(data.get("default_precision", "fp32")),
        peak_gops={str(k): float(v) for k, v in peaks.items()},
        memory_bandwidth_gbs=float(bw) if bw is not None else None,
        lut=data.get("lut"), predictor=data.get("predictor"), nb201_column=data.get("nb201_column"),
        sources=tuple(str(s) for s in data.get("sources", []) or []), notes=notes, path=str(path),
    )
