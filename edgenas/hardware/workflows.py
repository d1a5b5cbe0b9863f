"""The latency workflows behind ``edgenas latency profile|fit|eval`` and ``edgenas roofline``.

Each is one function over the library (the CLI only parses options): measure random architectures
here (resumable), fit a predictor, evaluate any latency model on held-out measurements, and the
roofline / memory report of one architecture on a device profile.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.hardware.datasets import LatencyData, read_latency_dataset
from edgenas.spaces.base import SearchSpace

Progress = Callable[[int, int], None]


def measure_random(space: SearchSpace, n: int, out: str | os.PathLike[str], settings: Any = None,
                   num_classes: int = 10, in_channels: int = 3, seed: int = 0,
                   progress: Progress | None = None) -> LatencyData:
    """Measure ``n`` seeded random architectures here, one fresh process each, appending one JSON line per
    architecture to ``out`` (a dataset :func:`read_latency_dataset` reads); a re-run skips those done."""
    from edgenas.hardware.measure import LatencyMeter, MeasureSettings

    settings = settings or MeasureSettings()
    path = Path(out)
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    done: set[str] = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                done.add(space.key(json.loads(line)["arch"]))
            except (ValueError, KeyError, TypeError, EdgenasError):
                continue  # a torn last line
    meter = LatencyMeter(space, num_classes, in_channels, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, arch in enumerate(archs):
        if space.key(arch) not in done:
            res = meter.measure(arch)
            t = np.asarray(res["times_ms"])
            row = {"arch": arch, "latency_ms": res["median_ms"], "p10_ms": float(np.percentile(t, 10)),
                   "runs": int(len(t)), "backend": settings.backend, "threads": settings.threads,
                   "loadavg": os.getloadavg()[0], "time": time.time()}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            done.add(space.key(arch))
        if progress:
            progress(i + 1, n)
    return read_latency_dataset(path, space, on_error="skip")


def fit_latency_predictor(space: SearchSpace, data: LatencyData, model: str = "gbt", lut: str | None = None,
                          num_classes: int = 10, in_channels: int = 3, holdout: int = 0,
                          out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Fit a predictor on ``data`` (the last ``holdout`` rows held out and evaluated); save to ``out``."""
    from edgenas.hardware.fidelity import fidelity_report
    from edgenas.hardware.lut import LatencyTable
    from edgenas.hardware.predictor import LatencyPredictor

    if holdout and holdout >= len(data) - 10:
        raise EdgenasError(f"--holdout {holdout} leaves fewer than 10 of {len(data)} rows to train on")
    train, test = data.split(len(data) - holdout) if holdout else (data, None)
    bound = LatencyTable.load(lut).bind(space, num_classes, in_channels) if lut else None
    t0 = time.perf_counter()
    pred = LatencyPredictor(space, model, num_classes, in_channels, lut=bound).fit(train.archs, train.latency_ms)
    pred.info_ = {"data": data.source, "column": data.column, "rows": len(train), "lut": lut}
    report: dict[str, Any] = {"model": model, "trained_on": len(train), "fit_seconds": time.perf_counter() - t0,
                              "offset": pred.offset_, "blend": pred.blend_, "skipped_lines": len(data.skipped)}
    if test is not None:
        report["holdout"] = fidelity_report(pred.predict(test.archs), test.latency_ms)
    if out:
        pred.save(out)
        report["saved"] = str(out)
    return report


def latency_model(space: SearchSpace, lut: str | None = None, predictor: str | None = None,
                  num_classes: int | None = None, in_channels: int | None = None) -> Callable[[list], np.ndarray]:
    """A vectorised ``archs -> ms`` function of a latency table or a saved predictor."""
    if (lut is None) == (predictor is None):
        raise EdgenasError("give exactly one of --lut PATH or --predictor PATH")
    if lut:
        from edgenas.hardware.lut import LatencyTable

        return LatencyTable.load(lut).bind(space, num_classes, in_channels).predict
    from edgenas.hardware.predictor import LatencyPredictor

    return LatencyPredictor.load(str(predictor), space).predict


def evaluate_latency_model(predict: Callable[[list], np.ndarray], data: LatencyData,
                           plot: str | os.PathLike[str] | None = None, title: str = "") -> dict[str, Any]:
    """Fidelity of ``predict`` on the measurements in ``data`` (in file order, which is measurement order)."""
    from edgenas.hardware.fidelity import fidelity_report, plot_fidelity

    p = np.asarray(predict(data.archs), dtype=np.float64)
    report = fidelity_report(p, data.latency_ms)
    report["skipped_lines"] = len(data.skipped)
    if plot:
        plot_fidelity(p, data.latency_ms, plot, title)
        report["plot"] = str(plot)
    return report


def roofline_report(space: SearchSpace, arch: Mapping[str, Any], device: str, precision: str | None = None,
                    num_classes: int = 10, in_channels: int = 3,
                    plot: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Roofline (per op and model) and memory of one architecture on a device profile."""
    from edgenas.hardware.devices import load_device
    from edgenas.hardware.memory import BYTES_PER_ELEMENT
    from edgenas.hardware.roofline import arch_ops, plot_roofline, roofline

    dev = load_device(device)
    arch = space.validate(arch)
    ops = arch_ops(space, arch, num_classes, in_channels)
    points, summary = roofline(ops, dev, precision)
    bpe = BYTES_PER_ELEMENT[summary["precision"]]
    params = sum(o.weight_elems for o in ops)
    report: dict[str, Any] = {"space": space.name, "arch": arch, "roofline": summary,
                              "memory": {"param_bytes": params * bpe}, "ops": [p.to_json() for p in points]}
    if space.builder:
        from edgenas.hardware.memory import arch_memory

        mem = arch_memory(space, arch, num_classes, in_channels, summary["precision"])
        report["memory"].update(peak_activation_bytes=mem["peak_activation_bytes"], peak_at=mem["peak_at"])
    if plot:
        plot_roofline(points, summary, plot, f"{space.name} on {dev.title or dev.name} ({summary['precision']})")
        report["plot"] = str(plot)
    return report
