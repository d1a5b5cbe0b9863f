"""How well can any accuracy predictor rank OFA subnets against accuracies measured on a finite validation set?

The issue's predictor target (Spearman >= 0.9 on 200 held-out subnets) is judged against measured
accuracies, which carry measurement noise: each subnet's accuracy on *these* validation images differs
from its expected accuracy. This bench measures that noise on the same held-out subnets and supernet as
``bench/ofa_cifar.py`` (its ``--work`` folder, pairs and settings), and the predictor's figures for several
training-set sizes:

* every held-out subnet's per-image results on the validation images (kept in the held-out pairs' cache;
  pairs measured before that are measured once more);
* split-half reliability: the Spearman (and Pearson) correlation between the subnets' accuracies on two
  random halves of the validation images, averaged over random splits; the Spearman-Brown formula
  ``2r / (1 + r)`` projects it to the full set, and its square root is the highest correlation a perfect
  predictor of the expected accuracy can reach against the full-set measurement (classical test theory);
* the noise standard deviation of one full-set measurement, from the halves' differences;
* the predictor (``AccuracyPredictor`` defaults) trained on the first N seeded training pairs, N from
  ``--train-sizes`` (missing pairs are measured and appended to the bench's caches; resumable).

    python bench/ofa_predictor_ceiling.py --work runs/gpu --device cpu --max-train 8000 --max-val 2000 \\
        --pair-recal 1000 --pair-val 2000 --train-sizes 300,500,1000

Writes ``bench/results/ofa_predictor_ceiling.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from bench.ofa_cifar import HOLDOUT_SEED, TRAIN_SEED, log  # noqa: E402
from edgenas.data import load_dataset  # noqa: E402
from edgenas.estimators.accuracy_predictor import AccuracyPredictor  # noqa: E402
from edgenas.estimators.measurement_noise import split_half_noise  # noqa: E402
from edgenas.estimators.train import torch_device  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402
from edgenas.supernets.shrinking import load_supernet  # noqa: E402
from edgenas.supernets.specialize import cached_hits, measure_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"))
    ap.add_argument("--work", default="runs/ofa_cifar", help="bench/ofa_cifar.py's work folder (ps/supernet.pt)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--max-val", type=int, default=2000)
    ap.add_argument("--pair-recal", type=int, default=500, help="as bench/ofa_cifar.py's (its defaults are these)")
    ap.add_argument("--pair-val", type=int, default=1000)
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--train-sizes", default="300,500,1000")
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3, help="predictor initialisations per training size")
    args = ap.parse_args()
    if not args.bench_data:
        sys.exit("set EDGENAS_DATA or pass --bench-data (the reference-data folder)")
    torch.set_num_threads(1)
    device = torch_device(args.device)
    work = Path(args.work)
    space = get_space("mbv3-tiny")
    data = load_dataset(f"npz:{Path(args.bench_data) / 'cifar10'}").subset(args.max_train, args.max_val).to(device)
    net, _ = load_supernet(work / "ps" / "supernet.pt", space)
    net = net.to(device)
    val = len(data.x_val) if args.pair_val is None else min(args.pair_val, len(data.x_val))
    tag = f"v{args.pair_val}_r{args.pair_recal}"
    sizes = [int(s) for s in args.train_sizes.split(",")]

    def pairs(n: int, seed: int, stem: str, keep_hits: bool = False) -> tuple[list, np.ndarray]:
        path = work / f"{stem}_{tag}.jsonl"
        archs, accs = measure_pairs(net, data, n, seed, args.pair_recal, args.pair_val, path, log,
                                    extra_caches=sorted(work.glob(f"{stem}_{tag}.*.jsonl")), keep_hits=keep_hits)
        return archs, np.asarray(accs)

    # held-out pairs measured before per-image results were kept are measured once more, with them
    te_archs, te_acc = pairs(args.holdout, HOLDOUT_SEED, "pairs_test", keep_hits=True)
    tr_archs, tr_acc = pairs(max(sizes), TRAIN_SEED, "pairs_train")
    hits = cached_hits(net, te_archs, val, sorted(work.glob(f"pairs_test_{tag}*.jsonl")))
    rel = split_half_noise(hits, args.splits).to_json()
    log(f"held-out accuracies: std {te_acc.std():.2f} points; noise sd of one measurement {rel['noise_sd_points']:.2f} "
        f"(binomial {rel['binomial_sd_points']:.2f}); split-half Spearman {rel['split_half_spearman']:.3f} -> "
        f"ceiling of Spearman vs the measured accuracies {rel['ceiling_spearman']:.3f}")
    rows = []
    for n in sizes:
        for s in range(args.seeds):
            pred = AccuracyPredictor(space, random_state=s).fit(tr_archs[:n], tr_acc[:n]).predict(te_archs)
            rows.append({"train_pairs": n, "seed": s, "spearman": float(spearmanr(pred, te_acc)[0]),
                         "rmse": float(np.sqrt(np.mean((pred - te_acc) ** 2)))})
    print("| training pairs | Spearman (mean of seeds) | RMSE | ceiling of Spearman |")
    print("|---|---|---|---|")
    summary = []
    for n in sizes:
        sel = [r for r in rows if r["train_pairs"] == n]
        m = {"train_pairs": n, "spearman": float(np.mean([r["spearman"] for r in sel])),
             "rmse": float(np.mean([r["rmse"] for r in sel]))}
        summary.append(m)
        print(f"| {n} | {m['spearman']:.3f} | {m['rmse']:.3f} | {rel['ceiling_spearman']:.3f} |")
    path = save("ofa_predictor_ceiling", {
        "settings": vars(args), "holdout": len(te_acc), "val_images": val,
        "holdout_accuracy_std": float(te_acc.std()),
        "holdout_accuracy_range": [float(te_acc.min()), float(te_acc.max())],
        "reliability": rel, "predictor": rows, "summary": summary})
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
