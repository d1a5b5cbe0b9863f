"""Read (architecture, measured latency) datasets for fitting and evaluating latency predictors.

Formats:

- **JSON lines**: one object per line, either ``{"arch": {...}, "latency_ms": 1.23}`` (an edgenas
  architecture) or OFA's subnet form ``{"ks": [...], "e": [...], "d": [...], "r": 224, "latency_ms":
  ...}`` (spaces with ``from_ofa``). ``latency_ms`` may be a number or an object of device columns
  (``{"titan_rtx_1": 4.4, ...}``), in which case ``column`` picks one.
- **CSV**: an ``arch`` column (a JSON object, or the space's string form via ``from_string``) and a
  latency column (``column``, or ``latency_ms``). The NB201 device table ``nb201_latency_ms.csv`` (no
  ``arch`` column: rows are aligned by ``index`` with ``nb201_accuracy.csv``) is read through the NB201
  space's table loader.
- **Feature CSV** (spaces with ``from_features``, e.g. HAT's data sets): one column per feature of
  ``space.latency_feature_names()`` and latency columns; each row becomes an architecture with exactly those
  features. ``column`` may sum columns with ``+``; HAT's default is the encoder's plus the decoder's mean
  latency (``latency_mean_encoder+latency_mean_decoder``), the latency of a whole translation.

A line with an invalid architecture or latency stops the read with its line number
(``on_error="stop"``), or is skipped and counted (``on_error="skip"``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.spaces.base import Arch, SearchSpace


@dataclass
class LatencyData:
    """Architectures, their latencies (ms) and where each came from (1-based line numbers)."""

    archs: list[dict[str, Any]]
    latency_ms: np.ndarray
    lines: list[int]
    source: str
    column: str | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.archs)

    def split(self, n_train: int) -> tuple[LatencyData, LatencyData]:
        """The first ``n_train`` rows and the rest, in file (measurement) order."""
        def part(sl: slice) -> LatencyData:
            return LatencyData(self.archs[sl], self.latency_ms[sl], self.lines[sl], self.source, self.column)

        return part(slice(0, n_train)), part(slice(n_train, None))


def _latency(value: Any, column: str | None, where: str) -> float:
    if isinstance(value, Mapping):
        if column is None:
            raise EdgenasError(f"{where}: latency_ms has columns {sorted(value)}; pick one with --column")
        if column not in value:
            raise EdgenasError(f"{where}: no latency column '{column}' (has {sorted(value)})")
        value = value[column]
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise EdgenasError(f"{where}: latency {value!r} is not a number") from None
    if not math.isfinite(out) or out <= 0:
        raise EdgenasError(f"{where}: latency {out} is not a positive finite number")
    return out


def _arch_from_record(space: SearchSpace, rec: Mapping[str, Any], where: str) -> dict[str, Any]:
    if "arch" in rec:
        arch = rec["arch"]
        if isinstance(arch, str) and hasattr(space, "from_string"):
            return space.from_string(arch)
        return space.validate(arch)
    if "ks" in rec and hasattr(space, "from_ofa"):
        return space.from_ofa(rec)
    raise EdgenasError(f"{where}: no 'arch' (or OFA 'ks/e/d/r') in the record")


def read_latency_dataset(path: str | os.PathLike[str], space: SearchSpace, column: str | None = None,
                         on_error: str = "stop", limit: int | None = None) -> LatencyData:
    """Read a dataset (see the module docstring). ``on_error``: ``stop`` or ``skip`` invalid lines."""
    if on_error not in ("stop", "skip"):
        raise EdgenasError(f"on_error must be 'stop' or 'skip', not '{on_error}'")
    p = Path(path)
    if not p.is_file():
        raise EdgenasError(f"latency dataset '{path}' not found")
    if p.suffix == ".csv":
        return _read_csv(p, space, column, on_error, limit)
    with open(p, encoding="utf-8") as f:
        rows = ((no, line) for no, line in enumerate(f, start=1) if line.strip())
        archs, lat, lines, skipped = _collect(rows, p.name, lambda rec, where: _parse_jsonl(space, column, rec, where),
                                              on_error, limit)
    if not archs:
        raise EdgenasError(f"latency dataset '{path}' has no usable rows" + (f" ({skipped[0]})" if skipped else ""))
    return LatencyData(archs, np.asarray(lat), lines, str(p), column, skipped)


def _parse_jsonl(space: SearchSpace, column: str | None, line: str, where: str) -> tuple[Arch, float]:
    try:
        rec = json.loads(line)
    except ValueError:
        raise EdgenasError(f"{where}: not valid JSON") from None
    if not isinstance(rec, Mapping):
        raise EdgenasError(f"{where}: not a JSON object")
    return _arch_from_record(space, rec, where), _latency(rec.get("latency_ms", rec.get("latency")), column, where)


def _parse_csv_row(space: SearchSpace, col: str, row: Mapping[str, str], where: str) -> tuple[Arch, float]:
    text = row["arch"]
    rec = {"arch": json.loads(text) if text.strip().startswith("{") else text}
    return _arch_from_record(space, rec, where), _latency(row[col], None, where)


HAT_TOTAL = "latency_mean_encoder+latency_mean_decoder"


def _latency_columns(col: str, fields: list[str], name: str) -> list[str]:
    parts = [c.strip() for c in col.split("+")]
    missing = [c for c in parts if c not in fields]
    if missing:
        raise EdgenasError(f"{name}: no latency column '{missing[0]}' (has {fields})")
    return parts


def _parse_feature_row(space: SearchSpace, cols: list[str], row: Mapping[str, str], where: str) -> tuple[Arch, float]:
    total = sum(_latency(row[c], None, where) for c in cols)
    return space.from_features(row), total  # type: ignore[attr-defined]


def _collect(rows: Iterable[tuple[int, Any]], name: str, parse: Callable[[Any, str], tuple[Arch, float]],
             on_error: str, limit: int | None) -> tuple[list[Arch], list[float], list[int], list[str]]:
    """Parse numbered rows into (archs, latencies, line numbers, skipped messages); an invalid row stops
    the read with its line number or, with ``on_error='skip'``, is skipped and its message kept."""
    archs, lat, lines, skipped = [], [], [], []
    for no, row in rows:
        where = f"{name} line {no}"
        try:
            arch, value = parse(row, where)
        except (EdgenasError, ValueError) as exc:
            msg = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            if on_error == "stop":
                raise EdgenasError(f"{msg} (pass --skip-invalid to skip such lines)") from None
            skipped.append(msg)
            continue
        archs.append(arch)
        lat.append(value)
        lines.append(no)
        if limit and len(archs) >= limit:
            break
    return archs, lat, lines, skipped


def _read_csv(p: Path, space: SearchSpace, column: str | None, on_error: str, limit: int | None) -> LatencyData:
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "arch" not in fields:
            if "index" in fields and space.name == "nb201":
                return _read_nb201(p, space, column)
            if hasattr(space, "from_features") and set(space.latency_feature_names()) <= set(fields):
                col = column or (HAT_TOTAL if set(HAT_TOTAL.split("+")) <= set(fields) else "latency_ms")
                cols = _latency_columns(col, fields, p.name)
                archs, lat, lines, skipped = _collect(
                    enumerate(reader, start=2), p.name,
                    lambda row, where: _parse_feature_row(space, cols, row, where), on_error, limit)
                if not archs:
                    raise EdgenasError(f"latency dataset '{p}' has no usable rows")
                return LatencyData(archs, np.asarray(lat), lines, str(p), col, skipped)
            if hasattr(space, "from_features"):
                missing = [f for f in space.latency_feature_names() if f not in fields]
                raise EdgenasError(f"{p.name}: a latency CSV for space '{space.name}' needs an 'arch' column or the "
                                   f"feature columns; missing {', '.join(missing)}")
            raise EdgenasError(f"{p.name}: a latency CSV needs an 'arch' column (has {fields})")
        col = column or ("latency_ms" if "latency_ms" in fields else None)
        if col is None or col not in fields:
            others = [c for c in fields if c != "arch"]
            raise EdgenasError(f"{p.name}: pick a latency column with --column (has {others})")
        archs, lat, lines, skipped = _collect(enumerate(reader, start=2), p.name,
                                              lambda row, where: _parse_csv_row(space, col, row, where),
                                              on_error, limit)
    if not archs:
        raise EdgenasError(f"latency dataset '{p}' has no usable rows")
    return LatencyData(archs, np.asarray(lat), lines, str(p), col, skipped)


def _read_nb201(p: Path, space: SearchSpace, column: str | None) -> LatencyData:
    try:
        from edgenas.benchmarks.nb201_table import load_nb201
    except ImportError:
        raise EdgenasError("reading the NB201 device table needs the nb201 space's table loader") from None
    table = load_nb201(p.parent)
    if column is None:
        raise EdgenasError(f"{p.name}: pick a device column with --column ({', '.join(table.devices)})")
    values = table.latency_of(column)
    codes = np.arange(len(values))
    archs = [space.from_code(int(c)) for c in codes]
    lines = [int(table.row_index[c]) + 2 for c in codes]
    return LatencyData(archs, np.asarray(values, dtype=np.float64), lines, str(p), column)
