"""Latency measured on this machine, one fresh process per measurement, cached.

Eager PyTorch and onnxruntime timings drift by tens of percent with a process's history (allocator state,
thread pools), so each measurement runs in a new Python process with a fixed thread count and glibc's
allocator told to keep freed memory (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``): warm-up
runs, then many timed runs, and the median is reported. Measurements of two candidates never overlap.

Results are cached in a JSON-lines file keyed by (space, architecture, backend, threads, batch, CPU model,
library versions), so a resumed or repeated search never measures the same network twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.io import cpu_model
from edgenas.spaces.base import SearchSpace

BACKENDS = ("onnxruntime", "torch")
# glibc caps the mmap threshold at 32 MiB on 64-bit; the trim threshold may be anything.
STABLE_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


@dataclass(frozen=True)
class MeasureSettings:
    """How to time a network: backend, threads, batch size, warm-up, timed runs and fresh processes.

    A measurement is the median over ``processes`` fresh worker processes of each one's median run time: on
    a shared (virtualised) CPU one process in five or so lands in a slow phase and its median is off by
    10-30%, which a single process cannot tell apart from a real difference (``bench/latency_noise.py``).
    """

    backend: str = "onnxruntime"
    threads: int = 1
    batch: int = 1
    warmup: int = 20
    runs: int = 100
    min_seconds: float = 0.3
    processes: int = 3

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EdgenasError(f"unknown latency backend '{self.backend}'; valid: {', '.join(BACKENDS)}")
        if self.threads < 1 or self.batch < 1 or self.runs < 1 or self.processes < 1:
            raise EdgenasError("threads, batch, runs and processes must be at least 1")


def backend_versions(backend: str) -> str:
    """The library versions a latency depends on (part of every cache key and table provenance)."""
    import torch

    if backend == "onnxruntime":
        import onnxruntime

        return f"torch{torch.__version__}-ort{onnxruntime.__version__}"
    return f"torch{torch.__version__}"


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(STABLE_ALLOCATOR_ENV)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def export_onnx(model: Any, path: str | os.PathLike[str], resolution: int, in_channels: int, batch: int = 1) -> None:
    """Export a model in eval mode to ONNX (opset 17, TorchScript-based exporter, no dynamic axes)."""
    import warnings

    import torch

    model.eval()
    x = torch.zeros(batch, in_channels, resolution, resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
        )


class LatencyMeter:
    """Measures (and caches) the latency of architectures of one space on this CPU."""

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        in_channels: int = 3,
        settings: MeasureSettings | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.settings = settings or MeasureSettings()
        self.cache_path = Path(cache_dir) / "latency.jsonl" if cache_dir else None
        self._cache: dict[str, float] = {}
        self._provenance = {
            "space": json.dumps(space.to_dict(), sort_keys=True),
            "cpu": cpu_model(),
            "versions": backend_versions(self.settings.backend),
            "settings": asdict(self.settings),
            "classes": num_classes,
            "in_channels": in_channels,
        }
        self._load_cache()

    def _key(self, arch: Mapping[str, Any]) -> str:
        blob = json.dumps({**self._provenance, "arch": self.space.key(arch)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _load_cache(self) -> None:
        if not self.cache_path or not self.cache_path.exists():
            return
        for line in self.cache_path.read_text().splitlines():
            try:
                row = json.loads(line)
                self._cache[row["key"]] = float(row["median_ms"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a killed run

    def cached(self, arch: Mapping[str, Any]) -> float | None:
        return self._cache.get(self._key(arch))

    def __call__(self, arch: Mapping[str, Any]) -> float:
        """Median latency in ms of ``arch`` (measured once, then cached)."""
        key = self._key(arch)
        if key not in self._cache:
            result = self.measure(arch)
            self._cache[key] = result["median_ms"]
            if self.cache_path:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.cache_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "median_ms": result["median_ms"]}) + "\n")
        return self._cache[key]

    def measure(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Measure ``arch`` now, uncached, in ``processes`` fresh processes; the median of their medians."""
        s = self.settings
        arch = self.space.validate(arch)
        res = self.space.resolution(arch)
        job: dict[str, Any] = {
            "backend": s.backend, "threads": s.threads, "batch": s.batch, "warmup": s.warmup,
            "runs": s.runs, "min_seconds": s.min_seconds, "resolution": res, "in_channels": self.in_channels,
            "num_classes": self.num_classes, "space": self.space.ref or self.space.name, "arch": arch,
        }
        with tempfile.TemporaryDirectory(prefix="edgenas-lat-") as tmp:
            if s.backend == "onnxruntime":
                model = self.space.build(arch, self.num_classes, self.in_channels)
                job["onnx_path"] = os.path.join(tmp, "model.onnx")
                export_onnx(model, job["onnx_path"], res, self.in_channels, s.batch)
            per_process = [self._run_worker(job, s.threads) for _ in range(s.processes)]
        medians = [r["median_ms"] for r in per_process]
        return {"median_ms": statistics.median(medians), "process_medians_ms": medians,
                "times_ms": [t for r in per_process for t in r["times_ms"]]}

    @staticmethod
    def _run_worker(job: dict[str, Any], threads: int) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "edgenas.hardware.measure_worker"],
            input=json.dumps(job), capture_output=True, text=True, env=worker_env(threads),
        )
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"latency measurement failed: {tail[0]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
