"""OFA's accuracy pairs in one process and on N Ray workers, side by side.

    python bench/ofa_pairs_scale_out.py [--workers 2] [--pairs 400]      # ~4 minutes

Trains a small ``mbv3-tiny`` supernet on the built-in digits once (``--work``), then measures the same
``--pairs`` seeded (subnet, accuracy) pairs with ``edgenas ofa predictor --workers 1`` and ``--workers N``,
each in a fresh process on a fresh output folder, and reports the wall time of each, the speed-up and
whether every pair got the same accuracy. The one-process run uses one thread, as each Ray worker does.
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


def edgenas(*args: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgenas", *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_ofa_pairs"))
    args = ap.parse_args()
    supernet = Path(args.work) / "supernet"
    if not (supernet / "supernet.pt").exists():
        print("training the supernet ...", flush=True)
        edgenas("ofa", "train", "--space", "mbv3-tiny", "--data", "digits", "--schedule", "full:2,expand:1",
                "--out", str(supernet), *(["--resume"] if (supernet / "last.pt").exists() else []))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, args.workers):
            out = Path(tmp) / f"w{workers}" / "acc.npz"
            seconds = edgenas("ofa", "predictor", "--supernet", str(supernet), "--data", "digits", "--pairs",
                              str(args.pairs), "--holdout", "0", "--workers", str(workers), "--out", str(out))
            rows = [json.loads(line) for line in out.with_name("acc_pairs.jsonl").read_text().splitlines()]
            runs[workers] = {"seconds": seconds,
                             "pairs": {json.dumps(r["arch"], sort_keys=True): r["accuracy"] for r in rows}}
            print(f"--workers {workers}: {len(rows)} pairs in {seconds:.1f} s", flush=True)
    one, many = runs[1], runs[args.workers]
    same = one["pairs"].keys() == many["pairs"].keys() and all(
        abs(one["pairs"][k] - many["pairs"][k]) < 1e-9 for k in one["pairs"])
    figures = {"settings": vars(args), "cpus": os.cpu_count(),
               "seconds": {str(w): r["seconds"] for w, r in runs.items()},
               "speedup": one["seconds"] / many["seconds"], "same_pairs": same}
    path = save("ofa_pairs_scale_out", figures)
    print(f"\n| workers | wall s ({args.pairs} pairs, fresh process) |\n|---|---|\n| 1 | {one['seconds']:.1f} |\n"
          f"| {args.workers} | {many['seconds']:.1f} |\nspeed-up {figures['speedup']:.2f}x; identical pairs: {same}")
    print("written", path)


if __name__ == "__main__":
    main()
