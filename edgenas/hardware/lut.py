"""Layer-wise latency lookup tables (LUTs): profile every layer of a space once, then predict by summing.

The method of ProxylessNAS (Cai et al., ICLR 2019) and Once-for-All (Cai et al., ICLR 2020): measure
each distinct layer configuration of the search space on the target device, and predict a network's
latency as the sum of its layers' entries. Summing isolated layers misses what a runtime does across
layers (per-call overhead counted once per layer, fusion, cache reuse), so the sum is corrected by a
*calibration* fitted on a few whole networks measured on the same device:
``latency ~ a * sum + b * layers + c`` (a robust least-squares fit; see :class:`Calibration`).

A :class:`LatencyTable` is a JSON file: entries ``{key: {median, mean, std, min, count}}`` in ms, the
provenance (space, classes, input channels, resolutions, backend, versions, threads, CPU) and the
calibration. ``table.bind(space, num_classes, in_channels)`` returns a :class:`LutModel` whose
``predict(archs)`` is one vectorised numpy sum (see :class:`edgenas.hardware.layers.MBV3Layers`).
OFA's and ProxylessNAS's published YAML tables load through :mod:`edgenas.hardware.ofa_lut` into the
same class.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.hardware.layers import Layer, MBV3Layers
from edgenas.io import atomic_write_json

FORMAT = "edgenas-lut/1"
PARTIAL_FORMAT = "edgenas-lut-partial/1"
STATS = ("median", "mean", "std", "min", "count")


# ---------------------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """``measured ~ a * lut_sum + b * n_layers + c``, fitted robustly on whole networks.

    ``b`` absorbs the per-call overhead that every isolated layer measurement pays once and a whole
    network pays once in total; ``a`` what fusion and cache reuse change proportionally. With fewer than
    five networks only ``a`` is fitted (``b = c = 0``). The fit is a Huber-weighted least squares
    (iteratively reweighted; Huber, 1964), so one disturbed measurement does not bend it.
    """

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    networks: int = 0
    train_mape: float | None = None

    def apply(self, lut_sum: np.ndarray, n_layers: np.ndarray) -> np.ndarray:
        return self.a * lut_sum + self.b * n_layers + self.c

    @classmethod
    def fit(cls, lut_sum: Sequence[float], n_layers: Sequence[float], measured: Sequence[float]) -> Calibration:
        s, n, y = (np.asarray(v, dtype=np.float64) for v in (lut_sum, n_layers, measured))
        if len(y) == 0:
            return cls()
        if len(y) < 5:
            X = s[:, None]
        else:
            X = np.column_stack([s, n, np.ones_like(s)])
            if np.linalg.matrix_rank(X) < 3:
                X = s[:, None]
        coef = huber_lstsq(X, y)
        a, b, c = (list(coef) + [0.0, 0.0])[:3]
        cal = cls(float(a), float(b), float(c), int(len(y)))
        cal.train_mape = float(np.mean(np.abs(cal.apply(s, n) / y - 1)) * 100)
        return cal


def huber_lstsq(X: np.ndarray, y: np.ndarray, delta: float = 1.345, iters: int = 30) -> np.ndarray:
    """Huber-loss linear regression by iteratively reweighted least squares (scale = MAD of residuals)."""
    w = np.ones(len(y))
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    for _ in range(iters):
        r = y - X @ coef
        scale = 1.4826 * np.median(np.abs(r - np.median(r))) or 1e-12
        u = np.abs(r) / (delta * scale)
        w = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        sw = np.sqrt(w)
        new = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        if np.allclose(new, coef, rtol=1e-9, atol=1e-12):
            break
        coef = new
    return coef


# ------------------------------------------------------------------------------------------- table
KeyFn = Callable[[Layer, int], list[str]]


def native_keys(layer: Layer, resolution: int) -> list[str]:
    """Our tables key a layer by its own description (its input shape already fixes the resolution)."""
    return [layer.key]


@dataclass
class LatencyTable:
    """Per-layer latency entries with their provenance and calibration (see the module docstring).

    ``keys_for`` maps one of our layers to the table's keys (our own keys, or OFA's / ProxylessNAS's for
    imported tables); ``stat`` names the entry field used for prediction (``median`` for our tables,
    ``mean`` for the published ones, which store no median).
    """

    entries: dict[str, dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)
    keys_for: KeyFn = native_keys
    stat: str = "median"
    source: str = ""

    # ------------------------------------------------------------ describe
    def built_for(self) -> str:
        m = self.meta
        if "built_for" in m:
            return str(m["built_for"])
        parts = [f"space '{m.get('space', '?')}'"]
        if "resolutions" in m:
            parts.append(f"resolutions {m['resolutions']}")
        if "widths" in m:
            parts.append(f"widths {m['widths']}")
        parts.append(f"{m.get('num_classes', '?')} classes")
        parts.append(f"{m.get('backend', '?')} ({m.get('versions', '?')}), {m.get('threads', '?')} thread(s)")
        if m.get("cpu"):
            parts.append(f"on {m['cpu']}")
        return ", ".join(parts)

    # --------------------------------------------------------------- bind
    def bind(self, space: Any, num_classes: int | None = None, in_channels: int | None = None) -> LutModel:
        """A vectorised predictor of this table for ``space`` (classes / channels default to the table's)."""
        m = self.meta
        config = m.get("space_config")
        if config is not None and json.dumps(config, sort_keys=True) != json.dumps(space.to_dict(), sort_keys=True):
            raise EdgenasError(
                f"latency table {self.source or '(in memory)'} was built for space '{m.get('space')}', "
                f"not for space '{space.name}' (or a differently configured one); profile it for this space"
            )
        nc = int(num_classes if num_classes is not None else m.get("num_classes", 1000))
        ic = int(in_channels if in_channels is not None else m.get("in_channels", 3))
        return LutModel(self, MBV3Layers(space, nc, ic))

    # ---------------------------------------------------------------- I/O
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "meta": self.meta, "calibration": asdict(self.calibration), "entries": self.entries}

    def save(self, path: str | os.PathLike[str]) -> None:
        if self.keys_for is not native_keys:
            raise EdgenasError("an imported (OFA/ProxylessNAS) table is read from its YAML; it is not saved as JSON")
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read a table: our JSON, or an OFA / ProxylessNAS YAML file or folder of them."""
        p = Path(path)
        if not p.exists():
            raise EdgenasError(f"latency table '{path}' not found")
        if p.is_dir() or p.suffix in (".yaml", ".yml"):
            from edgenas.hardware.ofa_lut import load_published_lut

            return load_published_lut(p)
        try:
            blob = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise EdgenasError(f"latency table '{path}' is not valid JSON (corrupted or truncated?): {exc}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise EdgenasError(f"'{path}' is not an edgenas latency table (expected format '{FORMAT}')")
        entries = blob.get("entries")
        if not isinstance(entries, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("median"), int | float) for v in entries.values()
        ):
            raise EdgenasError(f"latency table '{path}' has malformed entries (each needs a numeric 'median')")
        try:
            cal = Calibration(**blob.get("calibration", {}))
        except TypeError as exc:
            raise EdgenasError(f"latency table '{path}' has a malformed calibration: {exc}") from None
        return cls(entries, blob.get("meta", {}), cal, native_keys, "median", str(path))


class LutModel:
    """A :class:`LatencyTable` bound to a space: vectorised raw sums and calibrated predictions (ms).

    ``values[r, i]`` is the table's latency of layer ``i`` in a network at resolution index ``r`` (the
    published OFA tables hold one table per resolution); ``NaN`` where the table has no entry.
    """

    def __init__(self, table: LatencyTable, layers: MBV3Layers) -> None:
        self.table, self.layers = table, layers
        n_res = len(layers.resolutions)
        values = np.full((n_res, len(layers.layers) + 1), np.nan)
        values[:, -1] = 0.0  # the padding column that absent blocks (id -1) index
        self.missing: dict[tuple[int, int], str] = {}
        for ri, res in enumerate(layers.resolutions):
            for i in layers.layer_ids_at(ri):
                total = 0.0
                for key in table.keys_for(layers.layers[i], res):
                    entry = table.entries.get(key)
                    if entry is None:
                        self.missing[ri, i] = key
                        total = np.nan
                        break
                    total += float(entry[table.stat])
                values[ri, i] = total
        self.values = values

    def codes_and_ids(self, archs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        codes = self.layers.batch_codes(archs)
        return codes["r"], self.layers.batch_layer_ids(codes)

    def raw_sum(self, archs: Sequence[Mapping[str, Any]] | None = None,
                r_ids: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The uncalibrated sum of layer entries (ms) of each architecture."""
        r, ids = self.codes_and_ids(archs) if r_ids is None else r_ids
        per_layer = self.values[r[:, None], ids]
        if np.isnan(per_layer).any():
            row, col = (int(x[0]) for x in np.nonzero(np.isnan(per_layer)))
            ri, i = int(r[row]), int(ids[row, col])
            key = self.missing.get((ri, i), self.layers.layers[i].key)
            key = key.split("/", 1)[1] if key.startswith("r") and "/" in key else key
            raise EdgenasError(
                f"latency table {self.table.source or '(in memory)'} has no entry '{key}' "
                f"(a network at resolution {self.layers.resolutions[ri]}); it was built for {self.table.built_for()}"
            )
        return per_layer.sum(axis=1)

    def predict(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Calibrated latency (ms) of each architecture."""
        r, ids = self.codes_and_ids(archs)
        return self.table.calibration.apply(self.raw_sum(r_ids=(r, ids)), self.n_layers(ids))

    @staticmethod
    def n_layers(ids: np.ndarray) -> np.ndarray:
        return (ids >= 0).sum(axis=1).astype(np.float64)


# ---------------------------------------------------------------------------------------- profiling
@dataclass
class ProfileReport:
    path: str
    layers: int
    measured_now: int
    resumed: int
    networks: int
    seconds: float
    calibration: Calibration


def provenance(space: Any, num_classes: int, in_channels: int, settings: Any) -> dict[str, Any]:
    from edgenas.hardware.measure import backend_versions
    from edgenas.io import cpu_model

    return {
        "space": space.name, "space_config": space.to_dict(), "num_classes": int(num_classes),
        "in_channels": int(in_channels), "resolutions": list(space.mbv3.resolutions),
        "widths": list(space.mbv3.widths), "backend": settings.backend, "threads": settings.threads,
        "batch": settings.batch, "versions": backend_versions(settings.backend), "cpu": cpu_model(),
    }


class _Partial:
    """The resumable progress file of a profile: a header line, then one JSON line per finished item."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.layers: dict[str, dict[str, float]] = {}
        self.networks: list[dict[str, Any]] = []
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            try:
                head = json.loads(lines[0]) if lines else None
            except ValueError:
                head = None
            if not head or head.get("format") != PARTIAL_FORMAT:
                raise EdgenasError(f"'{path}' is not an edgenas profile in progress; move it away to start afresh")
            if _comparable(head["provenance"]) != _comparable(header):
                diff = [k for k in header if head["provenance"].get(k) != header.get(k)]
                raise EdgenasError(
                    f"the profile in progress '{path}' was made with other settings ({', '.join(diff)}); "
                    f"use the same settings to resume, or move it away to start afresh"
                )
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # the torn last line of a killed run
                if "key" in row:
                    self.layers[row["key"]] = {k: row[k] for k in STATS}
                elif "arch" in row:
                    self.networks.append(row)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"format": PARTIAL_FORMAT, "provenance": header}) + "\n")

    def add(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _comparable(p: dict[str, Any]) -> str:
    return json.dumps(p, sort_keys=True)


def profile_lut(
    space: Any,
    out: str | os.PathLike[str],
    settings: Any = None,
    num_classes: int = 10,
    in_channels: int = 3,
    calibrate: int = 20,
    seed: int = 0,
    group: int = 48,
    timing: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ProfileReport:
    """Measure every distinct layer of ``space`` and ``calibrate`` random whole networks; write the table.

    Progress goes to ``OUT.partial.jsonl`` line by line, so a killed profile resumes where it stopped
    (same settings required). Layers are timed in groups of ``group`` per fresh worker process.
    """
    from edgenas.hardware.layer_measure import measure_layers
    from edgenas.hardware.measure import LatencyMeter, MeasureSettings

    settings = settings or MeasureSettings()
    start = time.perf_counter()
    out = Path(out)
    layers = MBV3Layers(space, num_classes, in_channels)
    header = provenance(space, num_classes, in_channels, settings)
    partial = _Partial(out.with_name(out.name + ".partial.jsonl"), header)
    resumed = len(partial.layers)
    todo = [lay for lay in layers.layers if lay.key not in partial.layers]
    done_now = 0
    for g in range(0, len(todo), group):
        chunk = todo[g : g + group]

        def store(key: str, stats: dict[str, float]) -> None:
            partial.add({"key": key, **stats})
            partial.layers[key] = stats

        for _ in measure_layers(chunk, settings, space.mbv3.channel_divisor, timing, store):
            done_now += 1
            if progress:
                progress("layers", resumed + done_now, len(layers.layers))
    # Calibration networks: a fixed, seeded sample, so a resumed profile measures the same ones.
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(calibrate)]
    have = {json.dumps(r["arch"], sort_keys=True): r for r in partial.networks}
    meter = LatencyMeter(space, num_classes, in_channels, settings)
    rows = []
    for i, arch in enumerate(archs):
        k = json.dumps(arch, sort_keys=True)
        if k not in have:
            res = meter.measure(arch)
            have[k] = {"arch": arch, "median_ms": res["median_ms"]}
            partial.add(have[k])
        rows.append(have[k])
        if progress:
            progress("networks", i + 1, len(archs))
    table = LatencyTable(dict(partial.layers), {**header, "created": time.strftime("%Y-%m-%d %H:%M:%S")},
                         Calibration(), native_keys, "median", str(out))
    table.calibration = fit_calibration(table, space, [r["arch"] for r in rows], [r["median_ms"] for r in rows],
                                        num_classes, in_channels)
    table.meta["calibration_networks"] = [[r["arch"], r["median_ms"]] for r in rows]
    table.save(out)
    partial.path.unlink(missing_ok=True)
    return ProfileReport(str(out), len(layers.layers), done_now, resumed, len(rows),
                         time.perf_counter() - start, table.calibration)


def fit_calibration(table: LatencyTable, space: Any, archs: Sequence[Mapping[str, Any]], measured: Sequence[float],
                    num_classes: int | None = None, in_channels: int | None = None) -> Calibration:
    """Fit the table's calibration on whole networks measured on the same device."""
    model = table.bind(space, num_classes, in_channels)
    r, ids = model.codes_and_ids(archs)
    return Calibration.fit(model.raw_sum(r_ids=(r, ids)), model.n_layers(ids), measured)
