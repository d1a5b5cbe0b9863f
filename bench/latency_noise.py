"""How repeatable is a latency measurement? The same network measured again in separate fresh processes.

For N seeded random ``mbv3-tiny`` architectures, each is measured R times, each time in new processes
(the protocol of ``edgenas.hardware.measure``: a measurement is the median of 3 fresh processes, each
timing the network against the reference network in alternating blocks, scaled by the reference's
latency measured once); rounds are interleaved (arch 1..N, then again) so that slow drifts of the
machine's speed hit every architecture alike. Per architecture the relative spread is (max - min) / median
of its R measurements; the table reports the median over architectures (target <= 5%), for the
drift-corrected latency (the protocol's figure) and, side by side from the same runs, for the plain
medians without the correction.

    python bench/latency_noise.py [--archs 10] [--repeats 5] [--backend onnxruntime torch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from edgenas.hardware.measure import LatencyMeter, MeasureSettings  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", nargs="+", default=["onnxruntime", "torch"])
    args = p.parse_args()
    space = get_space("mbv3-tiny")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(args.archs)]
    figures: dict[str, dict] = {}
    for backend in args.backend:
        meter = LatencyMeter(space, 10, 3, MeasureSettings(backend=backend, threads=args.threads))
        runs: list[list[float]] = [[] for _ in archs]
        raw: list[list[float]] = [[] for _ in archs]
        process_medians: list[list[list[float]]] = [[] for _ in archs]
        load: list[float] = []  # 1-minute load average at the end of each round: other jobs show up here
        for _ in range(args.repeats):
            for i, arch in enumerate(archs):
                result = meter.measure(arch)
                runs[i].append(result["median_ms"])
                raw[i].append(result["raw_median_ms"])
                process_medians[i].append(result["process_medians_ms"])
            load.append(os.getloadavg()[0])
        spreads = [(max(r) - min(r)) / statistics.median(r) for r in runs]
        raw_spreads = [(max(r) - min(r)) / statistics.median(r) for r in raw]
        figures[backend] = {
            "reference_ms": meter.reference_ms(),
            "raw_median_relative_spread": statistics.median(raw_spreads),
            "raw_max_relative_spread": max(raw_spreads),
            "raw_runs_ms": raw,
            "median_relative_spread": statistics.median(spreads),
            "max_relative_spread": max(spreads),
            "per_arch_medians_ms": [statistics.median(r) for r in runs],
            "per_arch_spread": spreads,
            "runs_ms": runs,
            "process_medians_ms": process_medians,
            "load_per_round": load,
            "processes_per_measurement": meter.settings.processes,
        }
    print(f"{'backend':<12} {'median spread':>14} {'max spread':>11} {'raw median spread':>18} {'raw max':>8}"
          f" {'latency range (ms)':>20}")
    for backend, f in figures.items():
        lo, hi = min(f["per_arch_medians_ms"]), max(f["per_arch_medians_ms"])
        print(f"{backend:<12} {100 * f['median_relative_spread']:>13.1f}% {100 * f['max_relative_spread']:>10.1f}%"
              f" {100 * f['raw_median_relative_spread']:>17.1f}% {100 * f['raw_max_relative_spread']:>7.1f}%"
              f" {lo:>9.3f} - {hi:.3f}   load per round {', '.join(f'{x:.1f}' for x in f['load_per_round'])}")
    print("target: median spread <= 5%")
    path = save("latency_noise", {"archs": args.archs, "repeats": args.repeats, "threads": args.threads,
                                  "target_median_spread": 0.05, "results": figures})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
