"""Co-design vs a fixed accelerator: does searching the accelerator with the network pay? (NB201, Eyeriss base)

NAAS (Lin et al., DAC 2021) argues that the network and the accelerator should be searched together. Here,
with NB201's tabulated CIFAR-10 accuracy (instant, so the comparison is about the search, not training
noise) and edgenas's analytical accelerator model, under one latency budget, per seed:

* ``fixed``: regularized evolution over NB201 cells on the Eyeriss preset (12 x 14 PEs, 108 KB, row stationary);
* ``codesign``: the same evolution over ``codesign:nb201`` (cell x PE rows x PE columns x buffer x dataflow)
  with at most Eyeriss's 168 PEs, the other parameters (clock, DRAM bandwidth, word size) Eyeriss's.

Reported: the best accuracy that meets the budget, its latency and accelerator, over ``--seeds`` seeds.

    python bench/codesign_nb201.py --bench-data ../shared/data        # ~10 minutes (it traces the cells)

Writes ``bench/results/codesign_nb201.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from edgenas.experiment import ExperimentConfig, run_search  # noqa: E402


def best_feasible(records: list) -> dict | None:
    rows = [r for r in records if r.feasible]
    if not rows:
        return None
    r = max(rows, key=lambda r: r.metrics["accuracy"])
    hw = {k: v for k, v in r.arch.items() if k.startswith("hw.")}
    return {"accuracy": r.metrics["accuracy"], "latency_ms": r.metrics["latency"], "accelerator": hw or "eyeriss"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"), help="reference-data folder")
    ap.add_argument("--latency-ms", type=float, default=2.0, help="budget on the accelerator model")
    ap.add_argument("--budget", type=int, default=100, help="feasible candidates per search")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if not args.bench_data or not Path(args.bench_data, "nb201").is_dir():
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA (e.g. ../shared/data)")
    runs: dict[str, list] = {"fixed": [], "codesign": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for mode, space, constraints in (
                ("fixed", "nb201", {"latency": args.latency_ms}),
                ("codesign", "codesign:nb201", {"latency": args.latency_ms, "pes": 168}),
            ):
                t = time.time()
                cfg = ExperimentConfig(space=space, data="synthetic", estimator="tabular:nb201",
                                       target="accel:eyeriss", objectives=["accuracy"], constraints=constraints,
                                       strategy="evolution", budget=args.budget, seed=seed,
                                       bench_data=args.bench_data, out=str(Path(tmp, f"{mode}{seed}")))
                result = run_search(cfg)
                best = best_feasible(result.records)
                runs[mode].append({"seed": seed, "best": best, "trials": len(result.records),
                                   "seconds": time.time() - t})
                print(f"seed {seed} {mode:8}: best {best}", flush=True)
    summary = {}
    for mode, rows in runs.items():
        acc = [r["best"]["accuracy"] for r in rows if r["best"]]
        summary[mode] = {"best_accuracy_mean": float(np.mean(acc)) if acc else None,
                         "best_accuracy_per_seed": acc,
                         "latency_ms_per_seed": [r["best"]["latency_ms"] for r in rows if r["best"]]}
    print(f"{'search':10} {'best accuracy (mean over seeds)':>32}  per seed")
    for mode, s in summary.items():
        print(f"{mode:10} {s['best_accuracy_mean']:32.2f}  {s['best_accuracy_per_seed']}")
    path = save("codesign_nb201", {"latency_budget_ms": args.latency_ms, "budget": args.budget, "seeds": args.seeds,
                                   "pe_budget": 168, "runs": runs, "summary": summary,
                                   "note": "accuracy: NB201 CIFAR-10 test accuracy (tabular); latency: the analytical "
                                           "accelerator model (Eyeriss preset; codesign: Eyeriss's clock, DRAM and "
                                           "word size with searched PE array, buffer and dataflow)"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
