"""Time a group of small models in this fresh process; driven by :mod:`edgenas.hardware.layer_measure`.

Reads one JSON request on stdin and prints one JSON line per model as soon as it is timed (the parent
stores each at once). Models are timed one after the other, never two at once.
"""

from __future__ import annotations

import json
import statistics
import sys

from edgenas.hardware.measure_worker import time_runs


def main() -> None:
    req = json.loads(sys.stdin.read())
    threads = req["threads"]
    import numpy as np

    if req["backend"] == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    else:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    rng = np.random.default_rng(0)
    for job in req["jobs"]:
        x = rng.standard_normal(job["shape"]).astype(np.float32)
        if req["backend"] == "onnxruntime":
            sess = ort.InferenceSession(job["onnx_path"], opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name

            def run(sess=sess, name=name, x=x) -> object:
                return sess.run(None, {name: x})

            times = time_runs(run, req["warmup"], req["runs"], req["min_seconds"])
            del sess
        else:
            if "layer" in job:
                from edgenas.hardware.layer_measure import build_layer
                from edgenas.hardware.layers import Layer

                model = build_layer(Layer(**job["layer"]), job["divisor"])
            else:
                model = torch.jit.load(job["module_path"]).eval()
            tx = torch.from_numpy(x)
            with torch.inference_mode():
                times = time_runs(lambda model=model, tx=tx: model(tx), req["warmup"], req["runs"], req["min_seconds"])
        row = {
            "name": job["name"], "median": statistics.median(times), "mean": statistics.fmean(times),
            "std": statistics.pstdev(times), "min": min(times), "count": len(times),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
