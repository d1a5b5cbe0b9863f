"""How faithful are edgenas's latency models? Held-out fidelity on this CPU and on the shared OFA GPU data.

Parts (each updates its own section of ``bench/results/latency_fidelity.json``; run them in any order):

``ofa``      The shared OFA MobileNetV3 GPU latencies (HELP's titan_rtx_1 / v100_1 / titan_xp_1): train on
             the first 1,000 archs, test on the other 4,000, per device; our predictors against a ridge
             regression on one-hot choices (the issue's baseline); drift shown by residuals vs order.
             Needs no measurement.
             ``EDGENAS_DATA=../shared/data python bench/latency_fidelity.py ofa``
``profile``  Profile the ``mbv3-tiny`` layer table on this CPU (onnxruntime, 1 thread; resumable) and
             time it.  ``python bench/latency_fidelity.py profile``
``measure``  Measure N seeded random ``mbv3-tiny`` archs, each in a fresh process (resumable: appends
             to ``bench/results/cpu_mbv3_tiny_latency.jsonl``, one line per arch with the machine load).
             ``python bench/latency_fidelity.py measure --n 700``
``cpu``      Fit the LUT calibration and the predictors on the first archs, evaluate on the held-out rest.
             ``python bench/latency_fidelity.py cpu --train 400``
``timing``   Prediction speed: one arch and a batch of 10,000, LUT and predictors.
             ``python bench/latency_fidelity.py timing``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgenas.hardware.fidelity import fidelity, fidelity_report, plot_fidelity  # noqa: E402
from edgenas.io import atomic_write_json, machine_info  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "latency_fidelity.json"
LUT_PATH = RESULTS / "lut_mbv3_tiny_onnxruntime_1t.json"
CPU_DATA = RESULTS / "cpu_mbv3_tiny_latency.jsonl"
CPU_REF_DATA = RESULTS / "cpu_mbv3_tiny_latency_ref.jsonl"
DEVICES = ("titan_rtx_1", "v100_1", "titan_xp_1")


def update(section: str, figures: dict[str, Any]) -> None:
    blob = json.loads(OUT.read_text()) if OUT.exists() else {"benchmark": "latency_fidelity"}
    blob[section] = {
        "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(), "loadavg_at_end": os.getloadavg(), **figures,
    }
    atomic_write_json(OUT, blob)


def fmt(m: dict[str, Any]) -> str:
    return (f"±10%: {m['within_10_pct']:5.1f}  ±5%: {m['within_5_pct']:5.1f}  RMSE {m['rmse_ms']:.3f} ms  "
            f"MAPE {m['mape_pct']:5.2f}%  Spearman {m['spearman']:.3f}  Kendall {m['kendall']:.3f}")


# ------------------------------------------------------------------------------------------------- ofa
def part_ofa(args: argparse.Namespace) -> None:
    from sklearn.linear_model import Ridge

    from edgenas.hardware.datasets import read_latency_dataset
    from edgenas.hardware.predictor import LatencyPredictor

    data_dir = args.bench_data or os.environ.get("EDGENAS_DATA")
    if not data_dir:
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA (e.g. ../shared/data)")
    path = Path(data_dir) / "ofa_mbv3" / "ofa_mbv3_gpu_latency_ms.jsonl"
    space = get_space("mbv3")
    out: dict[str, Any] = {"train": args.train, "data": "ofa_mbv3/ofa_mbv3_gpu_latency_ms.jsonl", "devices": {}}
    for dev in DEVICES:
        data = read_latency_dataset(path, space, column=dev)
        train, test = data.split(args.train)
        y = test.latency_ms
        rows: dict[str, Any] = {}
        X_tr, X_te = space.encode_batch(train.archs), space.encode_batch(test.archs)
        ridge = Ridge(alpha=1.0).fit(X_tr, train.latency_ms)
        rows["ridge_onehot (baseline)"] = fidelity_report(ridge.predict(X_te), y)
        preds = {}
        for model in args.models:
            t0 = time.perf_counter()
            pred = LatencyPredictor(space, model, num_classes=1000).fit(train.archs, train.latency_ms)
            fit_s = time.perf_counter() - t0
            p = pred.predict(test.archs)
            preds[model] = p
            rows[model] = {**fidelity_report(p, y), "fit_seconds": fit_s, "offset": pred.offset_}
            # The same model without the out-of-fold offset, for transparency.
            nooff = p / np.exp(pred.offset_)
            rows[f"{model} (no offset)"] = fidelity(nooff, y)
        for name, m in rows.items():
            print(f"{dev:12s} {name:24s} {fmt(m)}", flush=True)
        shown = "gbt" if "gbt" in preds else args.models[0]  # the default model, chosen before looking
        png = RESULTS / f"latency_fidelity_ofa_{dev}.png"
        plot_fidelity(preds[shown], y, png, f"OFA MobileNetV3 on {dev}: {shown} predictor, trained on {args.train}")
        base = rows["ridge_onehot (baseline)"]["within_10_pct"]
        out["devices"][dev] = {"results": rows, "plot": str(png.relative_to(ROOT)),
                               "beats_baseline": {m: rows[m]["within_10_pct"] > base for m in args.models}}
    update("ofa_gpu", out)


# ------------------------------------------------------------------------------------------------ cpu
def part_profile(args: argparse.Namespace) -> None:
    import torch

    from edgenas.hardware.lut import profile_lut
    from edgenas.hardware.measure import MeasureSettings

    torch.set_num_threads(1)
    space = get_space("mbv3-tiny")
    load0 = os.getloadavg()
    t0 = time.time()

    def progress(what: str, done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            print(f"{what}: {done}/{total}  ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.2f})", flush=True)

    rep = profile_lut(space, LUT_PATH, MeasureSettings("onnxruntime", threads=1), num_classes=10,
                      calibrate=args.calibrate, progress=progress)
    print(f"profiled {rep.layers} layers ({rep.measured_now} now, {rep.resumed} resumed) and {rep.networks} "
          f"networks in {rep.seconds:.0f} s; calibration {rep.calibration}")
    update("profile", {
        "lut": str(LUT_PATH.relative_to(ROOT)), "layers": rep.layers, "measured_now": rep.measured_now,
        "resumed": rep.resumed, "calibration_networks": rep.networks, "seconds": rep.seconds,
        "complete_run": rep.resumed == 0, "loadavg_at_start": load0, "calibration": vars(rep.calibration),
    })


def part_measure(args: argparse.Namespace) -> None:
    import torch

    from edgenas.hardware.measure import LatencyMeter, MeasureSettings

    torch.set_num_threads(1)
    space = get_space("mbv3-tiny")
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)]
    data = CPU_REF_DATA if args.reference else CPU_DATA
    done = set()
    if data.exists():
        for line in data.read_text().splitlines():
            try:
                done.add(json.loads(line)["i"])
            except (ValueError, KeyError):
                continue
    # --reference: drift-corrected, one process per arch (the ratio is the figure); else the plain protocol
    settings = MeasureSettings("onnxruntime", threads=1, drift_correction=args.reference,
                               processes=1 if args.reference else 3)
    meter = LatencyMeter(space, 10, 3, settings)
    t0 = time.time()
    for i, arch in enumerate(archs):
        if i in done:
            continue
        load = os.getloadavg()[0]
        res = meter.measure(arch)
        if args.reference:  # drift-corrected: timed against a fixed reference network in the same process
            row = {"i": i, "arch": arch, "latency_ms": res["raw_median_ms"], "ratio": res["ratios"][0],
                   "ref_ms": res["reference_raw_ms"][0], "loadavg": load, "time": time.time()}
            if not done:  # the reference network, once at the top of the file
                row["reference"] = meter.reference
                done.add(-1)
        else:
            t = np.asarray(res["times_ms"])
            row = {"i": i, "arch": arch, "latency_ms": res["median_ms"], "p10_ms": float(np.percentile(t, 10)),
                   "min_ms": float(t.min()), "runs": len(t), "loadavg": load, "time": time.time()}
        with open(data, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if i % 10 == 0:
            print(f"{i + 1}/{args.n} measured ({time.time() - t0:.0f} s, load {load:.2f})", flush=True)


def _read_cpu(path: Path) -> list[dict[str, Any]]:
    rows = {}
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
            rows[r["i"]] = r
        except (ValueError, KeyError):
            continue
    return [rows[i] for i in sorted(rows)]


def part_cpu(args: argparse.Namespace) -> None:
    from edgenas.hardware.lut import LatencyTable, fit_calibration
    from edgenas.hardware.predictor import LatencyPredictor

    space = get_space("mbv3-tiny")
    data = CPU_REF_DATA if args.reference else CPU_DATA
    rows = _read_cpu(data)
    if len(rows) < args.train + 50:
        sys.exit(f"only {len(rows)} measured archs; run the 'measure' part first")
    stat = args.stat
    archs = [r["arch"] for r in rows]
    y = np.array([r[stat] for r in rows])
    order = np.array([r["time"] for r in rows])
    tr, te = slice(0, args.train), slice(args.train, None)
    table = LatencyTable.load(LUT_PATH)
    lut = table.bind(space, 10, 3)
    unit = "reference-network units (arch / reference, same process)" if stat == "ratio" else "ms"
    out: dict[str, Any] = {"stat": stat, "unit_of_rmse": unit, "data": str(data.relative_to(ROOT)), "train": args.train,
                           "test": len(rows) - args.train,
                           "test_loadavg_median": float(np.median([r["loadavg"] for r in rows[args.train:]])),
                           "results": {}}
    res = out["results"]
    raw = lut.raw_sum(archs)
    res["lut raw sum"] = fidelity_report(raw[te], y[te], order[te])
    if stat != "ratio":  # the profile's calibration is in ms, the ratio is in reference units
        res["lut + profile calibration"] = fidelity_report(lut.predict(archs)[te], y[te], order[te])
    for n_cal in args.calibrate:
        cal = fit_calibration(table, space, archs[:n_cal], y[:n_cal], 10, 3)
        table.calibration = cal
        res[f"lut + calibration on {n_cal} nets"] = fidelity_report(lut.predict(archs)[te], y[te], order[te])
    table.calibration = fit_calibration(table, space, archs[: args.train], y[: args.train], 10, 3)
    lut_pred = lut.predict(archs)[te]
    res[f"lut + calibration on {args.train} nets"] = fidelity_report(lut_pred, y[te], order[te])
    preds = {"lut": lut_pred}
    for model in args.models:
        for use_lut in (False, True):
            name = f"{model}{' + lut features' if use_lut else ''}"
            t0 = time.perf_counter()
            pred = LatencyPredictor(space, model, 10, lut=lut if use_lut else None).fit(archs[tr], y[tr])
            p = pred.predict(archs[te])
            preds[name] = p
            res[name] = {**fidelity_report(p, y[te], order[te]), "fit_seconds": time.perf_counter() - t0}
    for name, m in res.items():
        print(f"{name:34s} {fmt(m)}", flush=True)
    best = "gbt + lut features" if "gbt + lut features" in preds else next(k for k in preds if k != "lut")
    for name in ("lut", best):  # the default predictor (chosen before looking) and the table
        key = name if name != "lut" else f"lut + calibration on {args.train} nets"
        tag = f"{stat}{'_reference_pass' if args.reference and stat != 'ratio' else ''}"
        png = RESULTS / f"latency_fidelity_cpu_{tag}_{'lut' if name == 'lut' else 'predictor'}.png"
        what = "drift-corrected" if stat == "ratio" else "raw medians"
        plot_fidelity(preds[name], y[te], png, f"mbv3-tiny on this CPU ({what}): {key}", order[te],
                      "x reference" if stat == "ratio" else "ms")
    out["plotted_predictor"] = best
    update(f"cpu_{stat}{'_reference_pass' if args.reference and stat != 'ratio' else ''}", out)


# --------------------------------------------------------------------------------------------- timing
def part_timing(args: argparse.Namespace) -> None:
    from edgenas.hardware.lut import LatencyTable
    from edgenas.hardware.predictor import LatencyPredictor

    def best_of(f: Any, k: int = 7) -> tuple[float, float]:
        """Best wall time and best CPU time of this process (the latter ignores waiting for a core,
        which on this oversubscribed machine is most of the difference)."""
        wall, cpu = [], []
        for _ in range(k):
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return min(wall), min(cpu)

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"loadavg_at_start": os.getloadavg(), "models": {}}
    cases = []
    tiny = get_space("mbv3-tiny")
    if LUT_PATH.exists():
        cases.append(("lut mbv3-tiny (ours)", tiny, LatencyTable.load(LUT_PATH).bind(tiny, 10, 3).predict))
    data_dir = args.bench_data or os.environ.get("EDGENAS_DATA")
    full = get_space("mbv3")
    if data_dir:
        ofa = LatencyTable.load(Path(data_dir) / "ofa_mbv3" / "lut").bind(full)
        cases.append(("lut mbv3 (OFA Note10 YAML)", full, ofa.predict))
    sample = [tiny.sample(rng) for _ in range(200)]
    predictors = {}
    for model in args.models:
        pred = LatencyPredictor(tiny, model, 10, folds=0, offset="none").fit(sample, np.linspace(1, 2, 200))
        predictors[f"predictor {model} mbv3-tiny"] = pred
        cases.append((f"predictor {model} mbv3-tiny", tiny, pred.predict))
    for name, space, predict in cases:
        archs = [space.sample(rng) for _ in range(10_000)]
        if "OFA" in name:
            for a in archs:
                a["width"], a["resolution"] = 1.2, int(rng.choice([160, 176, 192, 208, 224]))
        one, one_cpu = best_of(lambda predict=predict, a=archs[0]: predict([a]), 50)
        batch, batch_cpu = best_of(lambda predict=predict, archs=archs: predict(archs))
        out["models"][name] = {"one_arch_ms": one * 1e3, "batch_10000_s": batch,
                               "one_arch_cpu_ms": one_cpu * 1e3, "batch_10000_cpu_s": batch_cpu}
        line = (f"{name:32s} one arch {one * 1e3:6.3f} ms (cpu {one_cpu * 1e3:6.3f})   10,000 archs "
                f"{batch:6.3f} s (cpu {batch_cpu:6.3f})")
        if name in predictors:  # the vectorised path: choice-index matrices, as the searches keep them
            codes = predictors[name].features_.layers.batch_codes(archs)
            vec, _ = best_of(lambda p=predictors[name], c=codes: p.predict_codes(c))
            out["models"][name]["batch_10000_from_codes_s"] = vec
            line += f"   from choice indices {vec:6.3f} s"
        print(line, flush=True)
    out["loadavg_at_end"] = os.getloadavg()
    update("timing", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["ofa", "profile", "measure", "cpu", "timing"])
    ap.add_argument("--bench-data", default=None)
    ap.add_argument("--train", type=int, default=None)
    ap.add_argument("--models", nargs="+", default=["linear", "gbt", "mlp"])
    ap.add_argument("--n", type=int, default=700)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--calibrate", type=int, nargs="+", default=[20])
    ap.add_argument("--stat", default="latency_ms", choices=["latency_ms", "p10_ms", "min_ms", "ratio"],
                    help="what to model: the raw median, or (with --reference data) the drift-free ratio")
    ap.add_argument("--reference", action="store_true",
                    help="measure / read the drift-corrected data (each arch timed against a reference net)")
    args = ap.parse_args()
    if args.part == "profile":
        args.calibrate = args.calibrate[0]
    if args.train is None:
        args.train = 1000 if args.part == "ofa" else 400
    {"ofa": part_ofa, "profile": part_profile, "measure": part_measure, "cpu": part_cpu,
     "timing": part_timing}[args.part](args)


if __name__ == "__main__":
    main()
