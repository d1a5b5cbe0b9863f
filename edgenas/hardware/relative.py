"""Drift-corrected latency: time each network against a fixed reference network in the same process.

On a shared machine the speed of the CPU changes in phases (other tenants come and go, the sibling
hyper-thread is busy or idle): on this 2-core machine whole runs of consecutive measurements came out
~16 % faster than the runs before them, which no latency model can predict from the architecture. If the
network and a fixed *reference* network are timed in alternating blocks within one fresh process, both
see the same machine state, and their ratio does not drift; ``ratio x reference_ms`` (a constant) is then
a latency on a fixed scale. This is the control-measurement idea of benchmarking practice applied to the
foundation's fresh-process protocol (:mod:`edgenas.hardware.measure`), onnxruntime only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.hardware.measure import MeasureSettings, export_onnx, worker_env
from edgenas.spaces.base import SearchSpace


def default_reference(space: SearchSpace, seed: int = 12345) -> dict[str, Any]:
    """A fixed, seeded mid-size architecture of the space."""
    return space.sample(np.random.default_rng(seed))


class RelativeMeter:
    """Measures ``arch`` against ``reference``: raw medians of both and their drift-free ratio."""

    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int = 3,
                 settings: MeasureSettings | None = None, reference: Mapping[str, Any] | None = None,
                 rounds: int = 12, runs: int = 25, warmup: int = 20) -> None:
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.settings = settings or MeasureSettings()
        if self.settings.backend != "onnxruntime":
            raise EdgenasError("drift-corrected (reference) measurement supports the onnxruntime backend only")
        self.reference = space.validate(reference or default_reference(space))
        self.rounds, self.runs, self.warmup = rounds, runs, warmup

    def _export(self, arch: Mapping[str, Any], path: str) -> list[int]:
        r = self.space.resolution(arch)
        export_onnx(self.space.build(arch, self.num_classes, self.in_channels), path, r, self.in_channels,
                    self.settings.batch)
        return [self.settings.batch, self.in_channels, r, r]

    def measure(self, arch: Mapping[str, Any]) -> dict[str, float]:
        arch = self.space.validate(arch)
        with tempfile.TemporaryDirectory(prefix="edgenas-rel-") as tmp:
            job = {
                "threads": self.settings.threads, "rounds": self.rounds, "runs": self.runs, "warmup": self.warmup,
                "ref": {"onnx_path": os.path.join(tmp, "ref.onnx")},
                "arch": {"onnx_path": os.path.join(tmp, "arch.onnx")},
            }
            job["ref"]["shape"] = self._export(self.reference, job["ref"]["onnx_path"])
            job["arch"]["shape"] = self._export(arch, job["arch"]["onnx_path"])
            proc = subprocess.run([sys.executable, "-m", "edgenas.hardware.pair_worker"], input=json.dumps(job),
                                  capture_output=True, text=True, env=worker_env(self.settings.threads))
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"relative latency measurement failed: {tail[0]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
