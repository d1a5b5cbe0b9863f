"""Time an architecture against a reference network, interleaved, in this fresh process.

Driven by :mod:`edgenas.hardware.relative`. Reads a JSON job on stdin with two ONNX models (``ref`` and
``arch``), warms both, then alternates blocks of timed runs (ref, arch, ref, arch, ...) and prints one
JSON line: each model's median and the median over rounds of the per-round ratio arch / ref.
"""

from __future__ import annotations

import json
import statistics
import sys

from edgenas.hardware.measure_worker import time_runs


def main() -> None:
    job = json.loads(sys.stdin.read())
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = job["threads"]
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    runs = []
    for key in ("ref", "arch"):
        sess = ort.InferenceSession(job[key]["onnx_path"], opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal(job[key]["shape"]).astype(np.float32)
        name = sess.get_inputs()[0].name
        runs.append(lambda sess=sess, name=name, x=x: sess.run(None, {name: x}))
    for run in runs:
        time_runs(run, job["warmup"], 0, 0.0)
    blocks: list[list[list[float]]] = [[], []]
    for _ in range(job["rounds"]):  # alternate: ref block, arch block, ref block, ...
        for which, run in enumerate(runs):
            blocks[which].append(time_runs(run, 0, job["runs"], 0.0))
    ref_med = [statistics.median(b) for b in blocks[0]]
    arch_med = [statistics.median(b) for b in blocks[1]]
    print(json.dumps({
        "ref_ms": statistics.median([t for b in blocks[0] for t in b]),
        "arch_ms": statistics.median([t for b in blocks[1] for t in b]),
        "ratio": statistics.median([a / r for a, r in zip(arch_med, ref_med, strict=True)]),
        "rounds": job["rounds"], "runs": job["runs"],
    }))


if __name__ == "__main__":
    main()
