"""Latency measured on this machine, one fresh process per measurement, cached.

Eager PyTorch and onnxruntime timings drift by tens of percent with a process's history (allocator state,
thread pools), so each measurement runs in a new Python process with a fixed thread count and glibc's
allocator told to keep freed memory (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``): warm-up
runs, then many timed runs, and the median is reported. Measurements of two candidates never overlap.

**Drift correction** (on by default): the speed of a shared (virtualised) CPU changes in phases of
minutes: on this 2-core machine whole runs of consecutive measurements come out 10-20 % slower than the
runs before them, which no fresh process can undo and no latency model can predict from the architecture.
So each worker times the network and a fixed *reference* network of the same space in alternating
blocks; both see the same machine state and their ratio does not drift. The reported latency is that ratio
times the reference's latency, measured once per meter (and cached with the results): a latency on a
fixed scale, comparable across a whole search. The raw medians are kept alongside.

Results are cached in a JSON-lines file keyed by (space, architecture, backend, threads, batch, CPU model,
library versions, settings, reference), so a resumed or repeated search never measures the same network
twice and keeps the scale it started with.
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
    With ``drift_correction`` each process times the network against the reference network in ``rounds``
    alternating blocks and the median of the processes' ratios is scaled by the reference's latency.
    """

    backend: str = "onnxruntime"
    threads: int = 1
    batch: int = 1
    warmup: int = 20
    runs: int = 100
    min_seconds: float = 0.3
    processes: int = 3
    drift_correction: bool = True
    rounds: int = 10

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EdgenasError(f"unknown latency backend '{self.backend}'; valid: {', '.join(BACKENDS)}")
        if min(self.threads, self.batch, self.runs, self.processes, self.rounds) < 1:
            raise EdgenasError("threads, batch, runs, processes and rounds must be at least 1")


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


def default_reference(space: SearchSpace, seed: int = 12345) -> dict[str, Any]:
    """The reference network of drift-corrected timing: a fixed, seeded architecture of the space."""
    import numpy as np

    return space.validate(space.sample(np.random.default_rng(seed)))


class LatencyMeter:
    """Measures (and caches) the latency of architectures of one space on this CPU.

    ``reference`` is the architecture that drift-corrected timing compares against (default: a fixed
    seeded architecture of the space, :func:`default_reference`).
    """

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        in_channels: int = 3,
        settings: MeasureSettings | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        reference: Mapping[str, Any] | None = None,
    ) -> None:
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.settings = settings or MeasureSettings()
        self.cache_path = Path(cache_dir) / "latency.jsonl" if cache_dir else None
        self._cache: dict[str, float] = {}
        self.reference = (space.validate(reference) if reference is not None else default_reference(space)) \
            if self.settings.drift_correction else None
        self._provenance = {
            "space": json.dumps(space.to_dict(), sort_keys=True),
            "cpu": cpu_model(),
            "versions": backend_versions(self.settings.backend),
            "settings": asdict(self.settings),
            "classes": num_classes,
            "in_channels": in_channels,
        }
        if self.reference is not None:
            self._provenance["reference"] = space.key(self.reference)
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
            self._store(key, self.measure(arch)["median_ms"])
        return self._cache[key]

    def _store(self, key: str, median_ms: float) -> None:
        self._cache[key] = median_ms
        if self.cache_path:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "median_ms": median_ms}) + "\n")

    def reference_ms(self) -> float:
        """The reference network's latency (plain protocol), measured once per meter and cached: the
        scale of drift-corrected latencies."""
        if self.reference is None:
            raise EdgenasError("this meter does not use drift correction (no reference network)")
        key = "reference-scale-" + self._key(self.reference)
        if key not in self._cache:
            self._store(key, statistics.median(r["median_ms"] for r in self._run_processes(self.reference, False)))
        return self._cache[key]

    def measure(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Measure ``arch`` now, uncached, in ``processes`` fresh processes.

        Returns ``median_ms`` (drift-corrected: the median ratio to the reference times
        :meth:`reference_ms`; without drift correction the median of the processes' medians),
        ``raw_median_ms`` and ``process_medians_ms`` (the plain medians), ``times_ms`` and, drift-corrected,
        each process's ``ratios`` and ``reference_raw_ms`` and the scale ``reference_ms``.
        """
        arch = self.space.validate(arch)
        corrected = self.reference is not None
        scale = self.reference_ms() if corrected else None
        per_process = self._run_processes(arch, corrected)
        medians = [r["median_ms"] for r in per_process]
        out: dict[str, Any] = {"raw_median_ms": statistics.median(medians), "process_medians_ms": medians,
                               "times_ms": [t for r in per_process for t in r["times_ms"]]}
        if scale is None:
            out["median_ms"] = out["raw_median_ms"]
        else:
            out["ratios"] = [r["ratio"] for r in per_process]
            out["reference_raw_ms"] = [r["reference_median_ms"] for r in per_process]
            out["reference_ms"] = scale
            out["median_ms"] = scale * statistics.median(out["ratios"])
        return out

    def _run_processes(self, arch: dict[str, Any], with_reference: bool) -> list[dict[str, Any]]:
        s = self.settings
        job: dict[str, Any] = {
            "backend": s.backend, "threads": s.threads, "batch": s.batch, "warmup": s.warmup, "runs": s.runs,
            "min_seconds": s.min_seconds, "rounds": s.rounds, "in_channels": self.in_channels,
            "num_classes": self.num_classes, "space": self.space.ref or self.space.name,
        }
        with tempfile.TemporaryDirectory(prefix="edgenas-lat-") as tmp:
            job.update(self._model_job(arch, os.path.join(tmp, "model.onnx")))
            if with_reference:
                job["reference"] = self._reference_job()
            return [self._run_worker(job, s.threads) for _ in range(s.processes)]

    def _reference_job(self) -> dict[str, Any]:
        """The reference network's part of a job, built (and exported) once per meter."""
        if getattr(self, "_reference_model", None) is None:
            assert self.reference is not None
            self._reference_dir = tempfile.TemporaryDirectory(prefix="edgenas-ref-")  # removed with the meter
            self._reference_model = self._model_job(self.reference,
                                                    os.path.join(self._reference_dir.name, "reference.onnx"))
        return self._reference_model

    def _model_job(self, arch: dict[str, Any], onnx_path: str) -> dict[str, Any]:
        """What the worker needs to run ``arch``: its resolution and its ONNX file or its definition."""
        res = self.space.resolution(arch)
        model: dict[str, Any] = {"arch": arch, "resolution": res}
        if self.settings.backend == "onnxruntime":
            net = self.space.build(arch, self.num_classes, self.in_channels)
            export_onnx(net, onnx_path, res, self.in_channels, self.settings.batch)
            model["onnx_path"] = onnx_path
        return model

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
