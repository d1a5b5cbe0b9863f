"""Scale-out: the same search with 1 worker (in process) and with N Ray workers, side by side.

    python bench/scale_out.py [--workers 2] [--budget 8] [--epochs 3]

A random search (its proposals do not depend on the results, so every run trains the same architectures)
on ``mbv3-tiny`` with the built-in digits, each architecture trained from scratch; each run in a fresh
process on a fresh output folder. Reports the wall time of each run, the speed-up, and whether every
architecture got the same accuracy on the workers as in process. On this 2-core machine the in-process run
uses PyTorch's default thread count (what a user gets), each Ray worker one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run(out: Path, workers: int, budget: int, epochs: int) -> dict:
    code = (
        "import json, sys, torch;"
        "from edgenas.experiment import ExperimentConfig, run_search;"
        f"cfg = ExperimentConfig(out={str(out)!r}, space='mbv3-tiny', data='digits', estimator='train',"
        f" target=None, strategy='random', budget={budget}, objectives=['accuracy', 'params'], epochs={epochs},"
        f" workers={workers}, keep_weights=False);"
        "r = run_search(cfg);"
        "print(json.dumps({'threads': torch.get_num_threads(),"
        " 'trials': [[json.dumps(x.arch, sort_keys=True), x.metrics['accuracy'], x.seconds] for x in r.records]}))"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the run with {workers} worker(s) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"workers": workers, "wall_seconds": wall, "main_threads": result["threads"],
            "evaluation_seconds": sum(t[2] for t in result["trials"]),
            "accuracy": {t[0]: t[1] for t in result["trials"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serial = run(Path(tmp, "serial"), 1, args.budget, args.epochs)
        parallel = run(Path(tmp, "ray"), args.workers, args.budget, args.epochs)
    same_archs = set(serial["accuracy"]) == set(parallel["accuracy"])
    same_accuracy = same_archs and all(parallel["accuracy"][a] == v for a, v in serial["accuracy"].items())
    speedup = serial["wall_seconds"] / parallel["wall_seconds"]
    print(f"{'run':<24}{'wall (s)':>10}{'sum of evaluations (s)':>26}")
    for r in (serial, parallel):
        label = "1 worker, in process" if r["workers"] == 1 else f"{r['workers']} Ray workers"
        print(f"{label:<24}{r['wall_seconds']:>10.1f}{r['evaluation_seconds']:>26.1f}")
    print(f"speed-up {speedup:.2f}x on {os.cpu_count()} cores (Ray start-up included); same architectures: "
          f"{same_archs}; same accuracy for each: {same_accuracy}")
    path = save("scale_out", {"settings": vars(args), "serial": serial, "parallel": parallel, "speedup": speedup,
                              "same_architectures": same_archs, "same_accuracy": same_accuracy,
                              "cores": os.cpu_count(), "load_average_at_end": os.getloadavg()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
