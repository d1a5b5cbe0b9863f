"""SMASH and Graph HyperNetworks on NB201: does generated-weights accuracy rank cells like trained accuracy?

Brock et al. (SMASH, ICLR 2018) rank architectures by validation accuracy with HyperNet-generated weights and
report that this correlates with the accuracy of the same architectures trained normally. On the shared
CIFAR-10 images (the first ``--train`` for training, ``--val`` validation images for scoring, 32 px) this
trains, with the same steps, seeds and network (``--channels``, ``--cells``):

* the SMASH HyperNet (weights generated from the architecture's encoding, ``edgenas hypernet train``);
* a Graph HyperNetwork (weights decoded from a GNN's embedding of each op in the network's computation graph,
  Zhang et al., ICLR 2019; ``edgenas hypernet train --ghn``);
* the same network with architecture-independent weights (plain weight sharing with uniformly sampled
  paths, ``--shared``; Li & Talwalkar, UAI 2019);

then scores ``--archs`` random NB201 cells (seeded) with each, and reports the Spearman rho and Kendall tau of
those scores with NB201's 200-epoch CIFAR-10 test accuracy (the benchmark table), beside the parameter
count's rho (a zero-cost baseline).

    python bench/hypernet_nb201.py --bench-data ../shared/data      # ~35 minutes, one thread

A model already trained in ``--work`` (``hypernet.pt``) is scored again, not retrained; its training time is
read from its report.

Writes ``bench/results/hypernet_nb201.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from edgenas.data import load_dataset  # noqa: E402
from edgenas.estimators.hypernet import HyperNetConfig, hypernet_accuracy, load_hypernet, train_hypernet  # noqa: E402
from edgenas.evaluators import EvalContext, make_cost, make_estimator  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_hypernet"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--archs", type=int, default=100)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="smash,ghn,shared", help="Comma-separated subset of smash,ghn,shared.")
    args = ap.parse_args()
    if not args.bench_data:
        sys.exit("pass --bench-data PATH or set EDGENAS_DATA")
    from scipy.stats import kendalltau, spearmanr

    torch.set_num_threads(1)
    space = get_space("nb201")
    data = load_dataset(f"npz:{Path(args.bench_data) / 'cifar10'}").subset(args.train, args.val)
    ctx = EvalContext(space=space, data_spec="synthetic", bench_data=args.bench_data)
    table = make_estimator("tabular:nb201", ctx)
    archs = [space.sample(np.random.default_rng([args.seed, i])) for i in range(args.archs)]
    truth = np.array([table(a) for a in archs])
    params = np.array([make_cost("params", EvalContext(space=space, data_spec="synthetic"))(a) for a in archs])
    figures: dict = {"settings": vars(args), "truth": "NB201 CIFAR-10 test accuracy after 200 epochs (table)",
                     "params_spearman": float(spearmanr(params, truth).statistic), "models": {}}
    for mode in args.models.split(","):
        out = Path(args.work) / mode
        cfg = HyperNetConfig(channels=args.channels, cells_per_stage=args.cells, conditioned=mode != "shared",
                             graph=mode == "ghn", steps=args.steps, seed=args.seed)
        if not (out / "hypernet.pt").exists():
            train_hypernet(space, data, out, cfg, resume=(out / "last.pt").exists(), progress=print)
        report = json.loads((out / "report.json").read_text())
        if {**asdict(HyperNetConfig()), **report["config"]} != asdict(cfg):  # older reports lack newer fields
            sys.exit(f"{out} holds a model trained with other settings ({report['config']}); pass another --work")
        train_s = report["history"][-1]["seconds"]
        net, _ = load_hypernet(out, space)
        t0 = time.perf_counter()
        scores = np.array([hypernet_accuracy(net, a, data.x_val, data.y_val) for a in archs])
        rho, tau = spearmanr(scores, truth).statistic, kendalltau(scores, truth).statistic
        top = int(max(1, round(0.1 * len(archs))))
        overlap = len(set(np.argsort(-scores)[:top]) & set(np.argsort(-truth)[:top])) / top
        figures["models"][mode] = {"train_seconds": train_s, "score_seconds_per_arch": (time.perf_counter() - t0) /
                                   len(archs), "spearman": float(rho), "kendall": float(tau),
                                   "top10pct_overlap": overlap, "mean_score": float(scores.mean()),
                                   "scores": scores.tolist()}
        print(f"{mode}: Spearman {rho:.3f}, Kendall {tau:.3f}, top-10% overlap {overlap:.2f}, mean accuracy "
              f"{scores.mean():.1f} %")
    figures["truth_values"] = truth.tolist()
    names = list(figures["models"])
    figures["score_agreement_spearman"] = {
        f"{a}~{b}": float(spearmanr(figures["models"][a]["scores"], figures["models"][b]["scores"]).statistic)
        for i, a in enumerate(names) for b in names[i + 1:]}
    path = save("hypernet_nb201", figures)
    print("\n| scores from | Spearman rho | Kendall tau | top-10 % overlap |")
    for mode, m in figures["models"].items():
        print(f"| {mode} | {m['spearman']:.3f} | {m['kendall']:.3f} | {m['top10pct_overlap']:.2f} |")
    print(f"| #params | {figures['params_spearman']:.3f} | | |")
    print("agreement of the models' scores (Spearman):", figures["score_agreement_spearman"])
    print("written", path)


if __name__ == "__main__":
    main()
