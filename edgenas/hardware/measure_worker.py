"""Measure the latency of one network in this (fresh) process; driven by :mod:`edgenas.hardware.measure`.

Reads a JSON job on stdin, prints one JSON line with the timings. Kept apart so that each measurement
runs in a new process whose allocator and thread pools carry no history.

With a ``reference`` network in the job, the network and the reference are timed in alternating blocks
(reference, network, reference, ...) after warming both, and the line also carries the median over blocks
of the per-block ratio network / reference: both see the same machine state, so the ratio does not drift
with the speed of a shared CPU (see :mod:`edgenas.hardware.measure`).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def time_runs(run: Callable[[], object], warmup: int, runs: int, min_seconds: float) -> list[float]:
    """Call ``run`` ``warmup`` times, then time at least ``runs`` calls and ``min_seconds``; times in ms."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def make_runner(job: dict[str, Any], model: dict[str, Any]) -> Callable[[], object]:
    """A zero-argument call that runs ``model`` (``onnx_path`` or ``arch`` + ``resolution``) once."""
    import numpy as np

    shape = (job["batch"], job["in_channels"], model["resolution"], model["resolution"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if job["backend"] == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = job["threads"]
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model["onnx_path"], opts, providers=["CPUExecutionProvider"])
        inputs = sess.get_inputs()
        # A network whose output does not depend on its input (an NB201 cell whose edges to the output are
        # all 'none') exports without an input: it still runs, on an empty feed.
        feed = {inputs[0].name: x} if inputs else {}
        return lambda: sess.run(None, feed)
    import torch

    from edgenas.spaces import get_space

    net = get_space(job["space"]).build(model["arch"], num_classes=job["num_classes"],
                                        in_channels=job["in_channels"]).eval()
    tx = torch.from_numpy(x)
    return lambda: net(tx)


def set_threads(job: dict[str, Any]) -> None:
    """Fix PyTorch's thread counts (onnxruntime's are set per session)."""
    if job["backend"] == "torch":
        import torch

        torch.set_num_threads(job["threads"])
        torch.set_num_interop_threads(1)


def timing_context(job: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """PyTorch's inference mode around all timed calls (built networks stay ordinary modules)."""
    if job["backend"] == "torch":
        import torch

        return torch.inference_mode()
    return contextlib.nullcontext()


def paired_times(ref: Callable[[], object], arch: Callable[[], object], job: dict[str, Any]) -> dict[str, Any]:
    """Alternating blocks of the reference and the network: their medians and the drift-free ratio."""
    rounds = max(1, int(job.get("rounds", 10)))
    per_block = max(1, math.ceil(job["runs"] / rounds))
    block_seconds = job["min_seconds"] / rounds
    for run in (ref, arch):
        time_runs(run, job["warmup"], 0, 0.0)
    ref_blocks: list[list[float]] = []
    arch_blocks: list[list[float]] = []
    for _ in range(rounds):
        ref_blocks.append(time_runs(ref, 0, per_block, block_seconds))
        arch_blocks.append(time_runs(arch, 0, per_block, block_seconds))
    ratios = [statistics.median(a) / statistics.median(r) for a, r in zip(arch_blocks, ref_blocks, strict=True)]
    times = [t for b in arch_blocks for t in b]
    return {
        "median_ms": statistics.median(times), "times_ms": times,
        "reference_median_ms": statistics.median([t for b in ref_blocks for t in b]),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    job = json.loads(sys.stdin.read())
    set_threads(job)
    run = make_runner(job, job)
    ref = make_runner(job, job["reference"]) if job.get("reference") is not None else None
    with timing_context(job):
        if ref is None:
            times = time_runs(run, job["warmup"], job["runs"], job["min_seconds"])
            result: dict[str, Any] = {"median_ms": statistics.median(times), "times_ms": times}
        else:
            result = paired_times(ref, run, job)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
