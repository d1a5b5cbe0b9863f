"""The analytical accelerator model against HW-NAS-Bench's Eyeriss and FPGA latencies on NAS-Bench-201.

HW-NAS-Bench (Li et al., ICLR 2021) tabulates the latency of every NB201 network on an Eyeriss-like ASIC and
an FPGA, both from accelerator models. This scores a seeded sample of NB201 networks (CIFAR-10, 10 classes,
32 px) with edgenas's analytical model (`edgenas/hardware/accelerator.py`) for each shipped accelerator
preset, and reports rank correlations with the two tables, beside MACs. It also fits each latency (the
tables' and ours) as a linear function of the cell's op counts (NB201 repeats one cell 15 times, so a
layer-additive model is exactly such a function), which shows what each model charges per operation.

    python bench/accelerator_nb201.py --bench-data ../shared/data        # ~7 minutes (tracing 1,000 networks)

Writes ``bench/results/accelerator_nb201.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from edgenas.benchmarks.nb201_table import load_nb201  # noqa: E402
from edgenas.hardware.accelerator import list_accelerators, load_accelerator, network_cost  # noqa: E402
from edgenas.hardware.roofline import arch_ops  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402

OP_COLUMNS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def per_op_costs(op_counts: np.ndarray, latency: np.ndarray) -> dict[str, float]:
    """Least-squares cost per cell op (and a constant), and the fit's R^2."""
    X = np.column_stack([op_counts, np.ones(len(latency))])
    coef, *_ = np.linalg.lstsq(X, latency, rcond=None)
    pred = X @ coef
    r2 = 1 - np.sum((latency - pred) ** 2) / np.sum((latency - latency.mean()) ** 2)
    return {**{op: float(c) for op, c in zip(OP_COLUMNS, coef[:-1], strict=True)}, "constant": float(coef[-1]),
            "r2": float(r2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"), help="reference-data folder")
    ap.add_argument("--archs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.bench_data or not Path(args.bench_data, "nb201").is_dir():
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA (e.g. ../shared/data)")
    space = get_space("nb201")
    table = load_nb201(Path(args.bench_data, "nb201"))
    codes = np.random.default_rng(args.seed).choice(15625, size=args.archs, replace=False)
    accs = {name: load_accelerator(name) for name in list_accelerators()}
    ours: dict[str, list[float]] = {name: [] for name in accs}
    energy: dict[str, list[float]] = {name: [] for name in accs}
    macs, t0 = [], time.time()
    for i, code in enumerate(codes):
        ops = arch_ops(space, space.from_code(int(code)), 10)
        macs.append(sum(o.macs for o in ops))
        for name, acc in accs.items():
            _, summary = network_cost(acc, ops)
            ours[name].append(summary["latency_ms"])
            energy[name].append(summary["energy_uj"])
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(codes)} networks, {time.time() - t0:.0f} s", flush=True)
    op_idx = space.op_indices(codes)
    counts = np.column_stack([(op_idx == k).sum(axis=1) for k in range(1, 5)])
    references = {dev: np.asarray(table.latency_of(dev))[codes] for dev in ("eyeriss", "fpga")}
    rows: dict = {}
    models = {**{f"accel:{n}": np.array(v) for n, v in ours.items()}, "MACs": np.array(macs, dtype=float)}
    for model, values in models.items():
        rows[model] = {dev: {"spearman": float(spearmanr(values, ref).statistic),
                             "kendall": float(kendalltau(values, ref).statistic)} for dev, ref in references.items()}
    costs = {f"hw-nas-bench {dev}": per_op_costs(counts, ref) for dev, ref in references.items()}
    costs.update({f"accel:{n}": per_op_costs(counts, np.array(v)) for n, v in ours.items()})
    print(f"{'model':22} {'eyeriss rho':>12} {'tau':>6} {'fpga rho':>9} {'tau':>6}")
    for model, r in rows.items():
        print(f"{model:22} {r['eyeriss']['spearman']:12.3f} {r['eyeriss']['kendall']:6.3f} "
              f"{r['fpga']['spearman']:9.3f} {r['fpga']['kendall']:6.3f}")
    print("cost per cell op (least squares on op counts; ms):")
    print(f"{'latency of':22} " + " ".join(f"{c:>13}" for c in (*OP_COLUMNS, "constant", "r2")))
    for model, c in costs.items():
        print(f"{model:22} " + " ".join(f"{c[k]:13.4f}" for k in (*OP_COLUMNS, "constant", "r2")))
    path = save("accelerator_nb201", {
        "archs": len(codes), "seed": args.seed, "accelerators": {n: a.to_dict() for n, a in accs.items()},
        "rank_correlation": rows, "per_op_cost_ms": costs,
        "latency_ms_range": {n: [float(min(v)), float(max(v))] for n, v in ours.items()},
        "energy_range": {n: [float(min(v)), float(max(v))] for n, v in energy.items()},
        "note": "NB201 networks for CIFAR-10 (10 classes, 32 px, batch 1); HW-NAS-Bench latencies from the shared "
                "nb201_latency_ms.csv; the per-op costs are least-squares fits on the cell's op counts"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
