"""Latency predictors for HAT SubTransformers on HAT's measured data (Raspberry Pi 4 CPU, Xeon CPU, Titan Xp).

Wang et al. (HAT, ACL 2020) measured 2,000 SubTransformers of the WMT'14 En-De SuperTransformer per device
and fitted a latency predictor (an MLP with 3 hidden layers of 400 units on ten architecture features) to
steer the search; they also show that MACs rank latency poorly. Per device, over ``--splits`` seeded
random 80/20 splits, this reports on the held-out fifth:

* edgenas's predictors (``linear``: robust ridge; ``gbt``: ridge + boosted trees; ``mlp``: ridge + MLP),
  fitted on the same ten features (``edgenas latency fit --space hat-wmt14``);
* an MLP of HAT's shape (3 x 400, ReLU; features and latency scaled by their training maxima; Adam,
  full-batch, ``--mlp-steps`` steps), trained here with torch;
* MACs of translating a 30-token sentence (no training): its Spearman rho with the measured latency;

then, for the ``gbt`` predictor fitted on one device, its Spearman rho on every other device's held-out
archs (does a latency model transfer between devices?).

    python bench/hat_latency.py --bench-data ../shared/data       # ~7 minutes, one thread

Writes ``bench/results/hat_latency.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from edgenas.hardware.datasets import read_latency_dataset  # noqa: E402
from edgenas.hardware.fidelity import fidelity  # noqa: E402
from edgenas.hardware.predictor import LatencyPredictor  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402

DEVICES = {"raspberrypi": "wmt14ende_cpu_raspberrypi.csv", "xeon": "wmt14ende_cpu_xeon.csv",
           "titanxp": "wmt14ende_gpu_titanxp.csv"}
MODELS = ("linear", "gbt", "mlp")


def hat_shaped_mlp(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """An MLP of HAT's predictor shape (10 -> 400 -> 400 -> 400 -> 1), trained full-batch with Adam on
    features and latency divided by their training maxima; predictions for ``x_te`` in ms."""
    torch.manual_seed(seed)
    fx, fy = x_tr.max(axis=0), y_tr.max()
    xt = torch.tensor(x_tr / fx, dtype=torch.float32)
    yt = torch.tensor(y_tr / fy, dtype=torch.float32)[:, None]
    layers: list[torch.nn.Module] = []
    width = xt.shape[1]
    for _ in range(3):
        layers += [torch.nn.Linear(width, 400), torch.nn.ReLU()]
        width = 400
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return net(torch.tensor(x_te / fx, dtype=torch.float32))[:, 0].numpy().astype(np.float64) * fy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"), help="reference-data folder")
    ap.add_argument("--splits", type=int, default=3, help="seeded random 80/20 splits per device")
    ap.add_argument("--mlp-steps", type=int, default=1000)
    ap.add_argument("--out", default="hat_latency")
    args = ap.parse_args()
    if not args.bench_data or not Path(args.bench_data, "hat").is_dir():
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA (e.g. ../shared/data)")
    torch.set_num_threads(1)
    space = get_space("hat-wmt14")
    data = {dev: read_latency_dataset(Path(args.bench_data, "hat", f), space) for dev, f in DEVICES.items()}
    per_device: dict = {}
    transfer: dict = {a: {b: [] for b in DEVICES} for a in DEVICES}
    for split in range(args.splits):
        splits, fitted = {}, {}
        for dev, d in data.items():
            perm = np.random.default_rng(split).permutation(len(d))
            n_tr = int(0.8 * len(d))
            tr, te = perm[:n_tr], perm[n_tr:]
            a_tr, a_te = [d.archs[i] for i in tr], [d.archs[i] for i in te]
            y_tr, y_te = d.latency_ms[tr], d.latency_ms[te]
            splits[dev] = (a_te, y_te)
            rows = per_device.setdefault(dev, {"n": len(d), "latency_ms_range": [float(d.latency_ms.min()),
                                                                                  float(d.latency_ms.max())]})
            for model in MODELS:
                t = time.perf_counter()
                pred = LatencyPredictor(space, model=model, random_state=split).fit(a_tr, y_tr)
                fit_s = time.perf_counter() - t
                rows.setdefault(model, []).append({**fidelity(pred.predict(a_te), y_te), "fit_s": fit_s})
                if model == "gbt":
                    fitted[dev] = pred
            t = time.perf_counter()
            p = hat_shaped_mlp(space.latency_features(a_tr), y_tr, space.latency_features(a_te), args.mlp_steps,
                               split)
            rows.setdefault("hat_mlp_3x400", []).append({**fidelity(p, y_te), "fit_s": time.perf_counter() - t})
            macs = np.array([space.macs(a) for a in a_te])
            rows.setdefault("macs", []).append({"spearman": fidelity(macs, y_te)["spearman"]})
        for a in DEVICES:
            for b in DEVICES:
                a_te, y_te = splits[b]
                transfer[a][b].append(fidelity(fitted[a].predict(a_te), y_te)["spearman"])
        print(f"split {split + 1}/{args.splits} done", flush=True)

    summary: dict = {}
    for dev, rows in per_device.items():
        summary[dev] = {"n": rows["n"], "latency_ms_range": rows["latency_ms_range"]}
        for model in (*MODELS, "hat_mlp_3x400", "macs"):
            runs = rows[model]
            summary[dev][model] = {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))]
                                   for k in runs[0]}
    transfer_mean = {a: {b: float(np.mean(v)) for b, v in row.items()} for a, row in transfer.items()}
    print_table(summary, transfer_mean)
    path = save(args.out, {"splits": args.splits, "holdout_share": 0.2, "mlp_steps": args.mlp_steps,
                           "devices": summary, "transfer_gbt_spearman": transfer_mean,
                           "note": "mean and std over the splits; latency = encoder + decoder mean latency of "
                                   "translating one sentence, as measured by HAT; MACs: 30 source and 30 target "
                                   "tokens, layers only (edgenas.spaces.transformer.HATSpace.macs)"})
    print(f"wrote {path}")


def print_table(summary: dict, transfer: dict) -> None:
    print(f"{'device':12} {'model':14} {'RMSE ms':>10} {'MAPE %':>7} {'<=10 %':>7} {'rho':>6} {'fit s':>6}")
    for dev, rows in summary.items():
        for model in (*MODELS, "hat_mlp_3x400"):
            r = rows[model]
            print(f"{dev:12} {model:14} {r['rmse_ms'][0]:10.2f} {r['mape_pct'][0]:7.2f} {r['within_10_pct'][0]:7.1f} "
                  f"{r['spearman'][0]:6.3f} {r['fit_s'][0]:6.2f}")
        print(f"{dev:12} {'macs':14} {'':10} {'':7} {'':7} {rows['macs']['spearman'][0]:6.3f}")
    print("gbt fitted on (row) -> Spearman rho on (column):")
    print(" " * 12 + "".join(f"{b:>13}" for b in transfer))
    for a, row in transfer.items():
        print(f"{a:12}" + "".join(f"{v:13.3f}" for v in row.values()))


if __name__ == "__main__":
    main()
