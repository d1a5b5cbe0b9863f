"""Kernel-level latency prediction (nn-Meter) on this CPU: seen spaces, an unseen space, and baselines.

1. Sample the kernels of ``--networks`` random networks of ``mbv3-tiny`` and of ``nb201`` (plus
   ``--variants`` perturbed copies each and ``--random`` per kernel type across the ranges they span) and
   measure every one alone (fresh workers, onnxruntime, 1 thread;
   resumable, ``WORK/kernels.jsonl``).
2. Measure ``--calibrate`` random networks per space whole for the calibration, and ``--eval`` other random
   networks per space whole for the evaluation (fresh processes, median of 3; cached in ``WORK``).
   ``--adaptive`` rounds then sample more around the kernels predicted worst out of fold (nn-Meter's
   adaptive sampling), separately for each predictor's kernels.
3. Fit two predictors from those measurements: **both** (kernels and calibration of both spaces) and
   **mbv3-tiny only** (nb201 is then a space it never saw: nn-Meter's claim is that kernels generalise to
   unseen models). Baselines fitted on the same calibration networks: latency ~ a * MACs + c per space
   (what a FLOPs proxy gives), and, for ``mbv3-tiny``, the layer table given by ``--lut`` (per-space).
4. Report MAPE, the share within +-10 % (nn-Meter's accuracy measure) and Spearman on the evaluation
   networks; JSON in ``bench/results/kernel_latency.json``.

    python bench/kernel_latency.py --lut runs/proxyless_targets_epyc/lut_profiled_here.json

Run it on a quiet machine: every step times something.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=10, help="random networks per space whose kernels are sampled")
    ap.add_argument("--variants", type=int, default=1)
    ap.add_argument("--random", type=int, default=150, help="kernels per type drawn across the prior's ranges")
    ap.add_argument("--adaptive", type=int, default=1, help="rounds of sampling around the worst-predicted kernels")
    ap.add_argument("--calibrate", type=int, default=10)
    ap.add_argument("--eval", type=int, default=30)
    ap.add_argument("--lut", default=str(ROOT / "bench/results/lut_mbv3_tiny_onnxruntime_1t.json"),
                    help="a layer table of mbv3-tiny for the per-space baseline (best: profiled on this machine)")
    ap.add_argument("--work", default="runs/kernel_latency")
    args = ap.parse_args()

    from scipy.stats import spearmanr

    from edgenas.hardware.kernel_predictor import KernelPredictor, measure_adaptively, network_kernels, random_archs
    from edgenas.hardware.kernels import sample_kernels
    from edgenas.hardware.lut import Calibration, LatencyTable
    from edgenas.hardware.measure import LatencyMeter, MeasureSettings
    from edgenas.spaces import get_space

    work = Path(args.work)
    spaces = [get_space("mbv3-tiny"), get_space("nb201")]
    settings = MeasureSettings(drift_correction=False)
    t0 = time.time()
    prior = {s.name: [k for ks in network_kernels(s, random_archs(s, args.networks, 1000 * i)) for k in ks]
             for i, s in enumerate(spaces)}
    sampled = {name: sample_kernels(p, args.variants, seed=0, random_per_type=args.random)
               for name, p in prior.items()}
    # each predictor's kernels: its spaces' samples plus --adaptive rounds around its worst-predicted ones
    # (measured once: both sets share one results file)
    groups = {"both": ["mbv3-tiny", "nb201"], "mbv3-tiny only": ["mbv3-tiny"]}
    kernel_sets: dict[str, list] = {}
    for label, names in groups.items():
        ks = list(dict.fromkeys(k for n in names for k in sampled[n]))
        kernel_sets[label], results = measure_adaptively(ks, work / "kernels.jsonl", settings, args.adaptive, 0,
                                                         lambda m: print(m, flush=True))
    everything = list(dict.fromkeys(k for ks in kernel_sets.values() for k in ks))
    kernel_seconds = time.time() - t0

    nets: dict[str, dict[str, tuple[list, np.ndarray]]] = {}
    t1 = time.time()
    for i, s in enumerate(spaces):
        meter = LatencyMeter(s, 10, 3, settings, cache_dir=work / "networks" / s.name)
        nets[s.name] = {}
        for part, n, seed in (("calibrate", args.calibrate, 500 + 1000 * i), ("eval", args.eval, 12345 + i)):
            # networks the runtime folds to a constant (NB201 cells cut off by 'none' edges) are left out
            archs = [a for a in random_archs(s, 3 * n, seed) if network_kernels(s, [a])[0]][:n]
            nets[s.name][part] = (archs, np.array([meter(a) for a in archs]))
            print(f"{s.name} {part}: {n} networks measured", flush=True)
    network_seconds = time.time() - t1

    def fit(label: str) -> KernelPredictor:
        names, ks = groups[label], kernel_sets[label]
        pred = KernelPredictor(seed=0).fit(ks, [results[k.key] for k in ks])
        cal_nets = [kk for n in names for kk in network_kernels(get_space(n), nets[n]["calibrate"][0])]
        cal_ms = np.concatenate([nets[n]["calibrate"][1] for n in names])
        pred.calibrate(cal_nets, cal_ms)
        return pred

    def scores(pred_ms: np.ndarray, meas: np.ndarray) -> dict:
        err = pred_ms / meas - 1
        return {"mape_pct": float(np.mean(np.abs(err)) * 100), "within_10pct": float(np.mean(np.abs(err) <= 0.1)),
                "spearman": float(spearmanr(pred_ms, meas)[0]), "predicted_ms": pred_ms.tolist()}

    predictors = {"kernels (both spaces)": fit("both"), "kernels (mbv3-tiny only)": fit("mbv3-tiny only")}
    rows: dict[str, dict[str, dict]] = {}
    for s in spaces:
        archs, meas = nets[s.name]["eval"]
        kern = network_kernels(s, archs)
        rows[s.name] = {"measured_ms": meas.tolist()}
        for label, pred in predictors.items():
            rows[s.name][label] = scores(np.array([pred.predict_network(k) for k in kern]), meas)
        # FLOPs proxy: latency ~ a * MACs + c on this space's calibration networks
        cal_archs, cal_ms = nets[s.name]["calibrate"]
        cal_macs, eval_macs = (np.array([sum(k.costs()[0] for k in ks) for ks in network_kernels(s, group)],
                                        dtype=float) for group in (cal_archs, archs))
        a, c = np.polyfit(cal_macs, cal_ms, 1)
        rows[s.name]["MACs, linear (this space)"] = scores(a * eval_macs + c, meas)
        if s.name == "mbv3-tiny" and Path(args.lut).exists():
            table = LatencyTable.load(args.lut).bind(s, 10, 3)
            r, ids = table.codes_and_ids(cal_archs)
            table.table.calibration = Calibration.fit(table.raw_sum(r_ids=(r, ids)), table.n_layers(ids), cal_ms)
            rows[s.name]["layer table (this space)"] = scores(np.asarray(table.predict(archs)), meas)
    print(f"\n{'space':10s} {'predictor':28s} {'MAPE %':>7s} {'+-10 %':>7s} {'Spearman':>9s}")
    for name, row in rows.items():
        for label, sc in row.items():
            if label == "measured_ms":
                continue
            print(f"{name:10s} {label:28s} {sc['mape_pct']:7.1f} {100 * sc['within_10pct']:7.0f} {sc['spearman']:9.3f}")
    out = save("kernel_latency", {
        "settings": {"networks": args.networks, "variants": args.variants, "random": args.random,
                     "adaptive": args.adaptive,
                     "calibrate": args.calibrate, "eval": args.eval, "lut": args.lut, "backend": "onnxruntime",
                     "threads": 1},
        "kernels_measured": len(everything), "per_space_sampled": {n: len(k) for n, k in sampled.items()},
        "per_predictor_kernels": {label: len(ks) for label, ks in kernel_sets.items()},
        "kernel_seconds": kernel_seconds, "network_seconds": network_seconds,
        "per_type": {label: p.counts for label, p in predictors.items()},
        "calibration": {label: vars(p.calibration) for label, p in predictors.items()}, "results": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
