"""The NAS-Bench-201 / HW-NAS-Bench tables as numpy arrays indexed by architecture code.

Reads ``nb201/nb201_accuracy.csv`` (test accuracy after 200 epochs on CIFAR-10, CIFAR-100 and
ImageNet16-120; Dong & Yang, ICLR 2020) and ``nb201/nb201_latency_ms.csv`` (batch-1 latency in ms per
device; HW-NAS-Bench, Li et al., ICLR 2021, and HELP, Lee et al., NeurIPS 2021) from the reference-data
folder. Each column becomes a float64 array of length 15,625 whose entry ``c`` belongs to the
architecture with code ``c`` (:meth:`edgenas.spaces.nb201.NB201Space.code`), so a look-up of many
architectures is one fancy-indexing operation.

Both files are checked on load (header, one row per architecture, no duplicate ``index`` or ``arch``,
finite numbers, the latency rows aligned with the accuracy rows by ``index``); a problem is an
:class:`~edgenas.errors.EdgenasError` naming the file and line. Loaded tables are cached per path and file
modification time.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError, InvalidArchitecture, unknown_name
from edgenas.evaluators import Evaluator
from edgenas.spaces.nb201 import NUM_ARCHS, NB201Space, nb201_space, nb201_string_code

ACCURACY_FILE = "nb201_accuracy.csv"
LATENCY_FILE = "nb201_latency_ms.csv"
#: Data set name -> accuracy column.
DATASETS: dict[str, str] = {
    "cifar10": "cifar10_test",
    "cifar100": "cifar100_test",
    "imagenet16_120": "imagenet16_120_test",
}


@dataclass(frozen=True)
class NB201Table:
    """Accuracy and latency columns of NB201, each an array indexed by architecture code."""

    folder: str
    accuracy: Mapping[str, np.ndarray]  # data set -> (15625,) test accuracy in %
    latency: Mapping[str, np.ndarray]  # device -> (15625,) latency in ms
    row_index: np.ndarray  # code -> the table's ``index`` column

    @property
    def datasets(self) -> list[str]:
        return list(self.accuracy)

    @property
    def devices(self) -> list[str]:
        return list(self.latency)

    def accuracy_of(self, dataset: str) -> np.ndarray:
        """The accuracy array of ``dataset`` (``cifar10``, ``cifar100``, ``imagenet16_120``)."""
        if dataset not in self.accuracy:
            raise unknown_name("NB201 data set", dataset, self.accuracy)
        return self.accuracy[dataset]

    def latency_of(self, device: str) -> np.ndarray:
        """The latency array of ``device`` (a column of ``nb201_latency_ms.csv``)."""
        if not self.latency:
            raise EdgenasError(f"{Path(self.folder) / LATENCY_FILE} not found: no device latencies")
        if device not in self.latency:
            raise unknown_name(f"NB201 device (a column of {LATENCY_FILE})", device, self.latency)
        return self.latency[device]


def nb201_folder(path: str | os.PathLike[str]) -> Path:
    """The folder holding the NB201 CSVs: ``path`` itself or ``path/nb201``."""
    p = Path(path)
    for candidate in (p, p / "nb201"):
        if (candidate / ACCURACY_FILE).is_file():
            return candidate
    raise EdgenasError(
        f"NB201 data not found: neither {p / ACCURACY_FILE} nor {p / 'nb201' / ACCURACY_FILE} exists "
        f"(pass --bench-data PATH or set EDGENAS_DATA to the reference-data folder)"
    )


def load_nb201(path: str | os.PathLike[str]) -> NB201Table:
    """Load (once per path and file version) the NB201 tables from ``path`` or ``path/nb201``."""
    folder = nb201_folder(path).resolve()
    stamps = tuple(_stamp(folder / name) for name in (ACCURACY_FILE, LATENCY_FILE))
    return _load_cached(str(folder), stamps)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str, stamps: tuple[Any, ...]) -> NB201Table:
    space = nb201_space()
    root = Path(folder)
    code_of_index, accuracy = _read_accuracy(root / ACCURACY_FILE, space)
    latency: dict[str, np.ndarray] = {}
    if (root / LATENCY_FILE).is_file():
        latency = _read_latency(root / LATENCY_FILE, code_of_index)
    row_index = np.empty(NUM_ARCHS, dtype=np.int64)
    for index, code in code_of_index.items():
        row_index[code] = index
    return NB201Table(folder, accuracy, latency, row_index)


def _rows(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        missing = [c for c in required if c not in header]
        if missing:
            raise EdgenasError(
                f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})"
            )
        rows = []
        for fields in reader:
            if fields:
                rows.append((reader.line_num, dict(zip(header, fields, strict=False))))
        return header, rows


def _number(path: Path, line: int, column: str, text: str | None) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EdgenasError(f"{path}, line {line}: column '{column}' is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise EdgenasError(f"{path}, line {line}: column '{column}' is {text!r}, not a finite number")
    return value


def _index(path: Path, line: int, text: str | None) -> int:
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EdgenasError(f"{path}, line {line}: 'index' is {text!r}, not an integer") from None


def _read_accuracy(path: Path, space: NB201Space) -> tuple[dict[int, int], dict[str, np.ndarray]]:
    _, rows = _rows(path, ["index", "arch", *DATASETS.values()])
    accuracy = {name: np.full(NUM_ARCHS, np.nan) for name in DATASETS}
    code_of_index: dict[int, int] = {}
    line_of_code: dict[int, int] = {}
    line_of_index: dict[int, int] = {}
    for line, row in rows:
        index = _index(path, line, row.get("index"))
        if index in line_of_index:
            raise EdgenasError(
                f"{path}, line {line}: duplicate row index {index} (also on line {line_of_index[index]})"
            )
        line_of_index[index] = line
        try:
            code = nb201_string_code(row.get("arch") or "")
        except InvalidArchitecture as exc:
            raise EdgenasError(f"{path}, line {line}: {exc}") from None
        if code in line_of_code:
            raise EdgenasError(
                f"{path}, line {line}: duplicate architecture {row['arch']} "
                f"(also on line {line_of_code[code]})"
            )
        code_of_index[index] = code
        line_of_code[code] = line
        for name, column in DATASETS.items():
            accuracy[name][code] = _number(path, line, column, row.get(column))
    if len(code_of_index) != NUM_ARCHS:
        absent = next(c for c in range(NUM_ARCHS) if c not in line_of_code)
        raise EdgenasError(
            f"{path}: {len(code_of_index):,} architectures, expected all {NUM_ARCHS:,} of the NB201 space "
            f"(missing e.g. {space.to_string(space.from_code(absent))})"
        )
    return code_of_index, accuracy


def _read_latency(path: Path, code_of_index: dict[int, int]) -> dict[str, np.ndarray]:
    header, rows = _rows(path, ["index"])
    devices = [c for c in header if c != "index"]
    if not devices:
        raise EdgenasError(f"{path}: no device columns besides 'index'")
    latency = {d: np.full(NUM_ARCHS, np.nan) for d in devices}
    seen: dict[int, int] = {}
    for line, row in rows:
        index = _index(path, line, row.get("index"))
        if index in seen:
            raise EdgenasError(
                f"{path}, line {line}: duplicate row index {index} (also on line {seen[index]})"
            )
        if index not in code_of_index:
            raise EdgenasError(f"{path}, line {line}: row index {index} is not in {ACCURACY_FILE}")
        seen[index] = line
        code = code_of_index[index]
        for d in devices:
            latency[d][code] = _number(path, line, d, row.get(d))
    if len(seen) != len(code_of_index):
        absent = min(set(code_of_index) - set(seen))
        raise EdgenasError(
            f"{path}: {len(seen):,} rows, expected {len(code_of_index):,} (one per row of {ACCURACY_FILE}; "
            f"missing e.g. index {absent})"
        )
    return latency


class TableColumn(Evaluator):
    """An evaluator that reads one column of an :class:`NB201Table` (a look-up: ``instant``).

    ``values`` is the column's array indexed by code; :meth:`evaluate_codes` is the vectorised path the
    strategy benchmark uses.
    """

    instant = True

    def __init__(self, space: NB201Space, values: np.ndarray, label: str) -> None:
        self.space, self.values, self.label = space, values, label

    def __call__(self, arch: Mapping[str, Any]) -> float:
        return float(self.values[self.space.code(arch)])

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        return self.values[self.space.codes(archs)].tolist()

    def evaluate_codes(self, codes: np.ndarray) -> np.ndarray:
        return self.values[np.asarray(codes, dtype=np.int64)]

    def describe(self) -> str:
        return f"{self.name} [{self.unit}] ({self.direction}) from {self.label}"


def require_nb201_space(space: Any, spec: str) -> NB201Space:
    """``space`` if it is an NB201 cell space, else a clear error naming ``spec``."""
    if isinstance(space, NB201Space):
        return space
    name = getattr(space, "name", type(space).__name__)
    raise EdgenasError(f"'{spec}' looks up NAS-Bench-201 cells: use --space nb201 (got space '{name}')")
