"""EAS-style growth with Net2Net inheritance against random search with training from scratch, side by side.

    python bench/eas_growth.py [--data digits] [--budget 10] [--epochs 2] [--max-train N] [--seed 0]

Two searches of ``mbv3-tiny`` with the same budget and epochs per evaluation, one after the other in this
process (one thread): ``--strategy eas --estimator net2net`` (each child trains on from its parent's
function) and ``--strategy random --estimator train`` (each from scratch). Reports the best and mean
accuracy found, the best architecture's parameter count, how many evaluations inherited from a grown
parent rather than the root, the wall time of each search (the root's training included), and each search's
best architecture trained again from scratch with one recipe (``--retrain-epochs``), the fair comparison of
the architectures the two searches found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain-epochs", type=int, default=4, help="each search's best arch is then trained "
                    "from scratch with this many epochs, the same recipe for both")
    args = ap.parse_args()

    import torch

    from edgenas.experiment import Experiment, ExperimentConfig

    torch.set_num_threads(1)
    runs = {}
    for label, strategy, estimator in [("eas+net2net", "eas", "net2net"), ("random+scratch", "random", "train")]:
        with tempfile.TemporaryDirectory() as out:
            cfg = ExperimentConfig(out=out, space="mbv3-tiny", data=args.data, estimator=estimator, target=None,
                                   strategy=strategy, budget=args.budget, objectives=["accuracy", "params"],
                                   epochs=args.epochs, seed=args.seed, keep_weights=False,
                                   max_train=args.max_train)
            exp = Experiment(cfg)
            t0 = time.perf_counter()
            result = exp.run()
            seconds = time.perf_counter() - t0
            acc = [r.metrics["accuracy"] for r in result.records]
            best = result.records[int(np.argmax(acc))]
            parents = getattr(exp.evaluators["accuracy"], "parents", {})
            roots = {k for k, p in parents.items() if p is None}
            runs[label] = {
                "best_accuracy": max(acc), "mean_accuracy": float(np.mean(acc)),
                "best_params": best.metrics.get("params"), "best_arch": best.arch, "accuracies": acc,
                "inherited_from_grown_parent": sum(p is not None and p not in roots for p in parents.values()),
                "seconds": seconds,
            }
            print(f"{label:15s} best {max(acc):6.2f}  mean {np.mean(acc):6.2f}  best params "
                  f"{best.metrics.get('params', float('nan')):,.0f}  {seconds:7.1f} s", flush=True)
    from edgenas.data import load_dataset
    from edgenas.estimators.train import TrainEstimator, TrainRecipe
    from edgenas.spaces import get_space

    data = load_dataset(args.data, 32)
    if args.max_train:
        data = data.subset(args.max_train)
    retrain = TrainEstimator(get_space("mbv3-tiny"), data, recipe=TrainRecipe(epochs=args.retrain_epochs),
                             seed=args.seed)
    for label, run in runs.items():
        run["best_retrained_from_scratch"] = retrain(run["best_arch"])
        print(f"{label:15s} best arch trained from scratch for {args.retrain_epochs} epochs: "
              f"{run['best_retrained_from_scratch']:.2f}", flush=True)
    tag = "digits" if args.data == "digits" else Path(args.data.split(":", 1)[-1]).name
    path = save(f"eas_growth_{tag}", {"data": args.data, "budget": args.budget, "epochs": args.epochs,
                                      "max_train": args.max_train, "retrain_epochs": args.retrain_epochs,
                                      "threads": 1, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
