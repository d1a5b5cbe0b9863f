"""Measure the latency of one network in this (fresh) process; driven by :mod:`edgenas.hardware.measure`.

Reads a JSON job on stdin, prints one JSON line with the timings. Kept apart so that each measurement
runs in a new process whose allocator and thread pools carry no history.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable


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


def main() -> None:
    job = json.loads(sys.stdin.read())
    threads, batch, res, cin = job["threads"], job["batch"], job["resolution"], job["in_channels"]
    if job["backend"] == "onnxruntime":
        import numpy as np
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(job["onnx_path"], opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal((batch, cin, res, res)).astype(np.float32)
        times = time_runs(lambda: sess.run(None, {name: x}), job["warmup"], job["runs"], job["min_seconds"])
    else:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        from edgenas.spaces import get_space

        space = get_space(job["space"])
        model = space.build(job["arch"], num_classes=job["num_classes"], in_channels=cin).eval()
        x = torch.randn(batch, cin, res, res)
        with torch.inference_mode():
            times = time_runs(lambda: model(x), job["warmup"], job["runs"], job["min_seconds"])
    print(json.dumps({"median_ms": statistics.median(times), "times_ms": times}))


if __name__ == "__main__":
    main()
