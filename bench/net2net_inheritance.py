"""Net2Net weight inheritance against training from scratch, side by side, with the same epochs per arch.

    python bench/net2net_inheritance.py [--data digits] [--archs 8] [--epochs 2] [--seed 0]

A seeded random sample of ``mbv3-tiny`` architectures at one resolution, evaluated in order of size (as a
search that grows its networks would): each is trained ``--epochs`` from scratch, and ``--epochs`` from
weights inherited by function-preserving transformations (``--estimator net2net``: from the largest
architecture already trained that it dominates, or from the space's smallest one, trained first). Reports
accuracy per arch both ways, which arch each inherited from, the wall time of each way (the root's
training included), and how exactly the inherited network reproduced its parent before training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits", help="digits, npz:PATH, cifar10:PATH ...")
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from edgenas.data import load_dataset
    from edgenas.estimators.net2net import Net2NetEstimator, inherit
    from edgenas.estimators.train import TrainEstimator, TrainRecipe
    from edgenas.spaces import get_space

    torch.set_num_threads(1)
    space = get_space("mbv3-tiny")
    data = load_dataset(args.data, 32)
    if args.max_train:
        data = data.subset(args.max_train)
    rng = np.random.default_rng(args.seed)
    resolution = space.validate(space.extreme(smallest=False))["resolution"]
    archs = [space.validate({**space.sample(rng), "resolution": resolution, "width": 1.0})
             for _ in range(args.archs)]
    size = {space.key(a): sum(k * k + e for st in space.blocks(a) for k, e in st) for a in archs}
    archs.sort(key=lambda a: size[space.key(a)])
    recipe = TrainRecipe(epochs=args.epochs)
    scratch = TrainEstimator(space, data, recipe=recipe, seed=args.seed)
    net2net = Net2NetEstimator(space, data, recipe, seed=args.seed)

    rows, t_scratch, t_inherit = [], 0.0, 0.0
    for i, arch in enumerate(archs):
        t0 = time.perf_counter()
        acc_scratch = scratch(arch)
        t_scratch += time.perf_counter() - t0
        t0 = time.perf_counter()
        acc_inherit = net2net(arch)
        t_inherit += time.perf_counter() - t0
        parent_key = net2net.parents[space.key(arch)]
        parent_arch, parent_weights = net2net.pool[parent_key]
        parent = space.build(parent_arch, data.num_classes, data.in_channels, args.seed)
        parent.load_state_dict(parent_weights)
        child = inherit(space, parent_arch, parent, arch, data.num_classes, data.in_channels, args.seed).eval()
        x = data.at_resolution(resolution)[1][:64]
        with torch.no_grad():
            gap = float((child(x) - parent.eval()(x)).abs().max() / parent(x).abs().max())
        keys = [space.key(a) for a in archs]
        parent_name = f"arch {keys.index(parent_key)}" if parent_key in keys else "root"
        rows.append({"arch": arch, "scratch": acc_scratch, "inherited": acc_inherit, "parent": parent_name,
                     "function_gap": gap})
        print(f"arch {i}: scratch {acc_scratch:6.2f}  inherited {acc_inherit:6.2f}  (from {parent_name}, "
              f"output gap before training {gap:.1e})", flush=True)
    mean_s, mean_i = float(np.mean([r["scratch"] for r in rows])), float(np.mean([r["inherited"] for r in rows]))
    wins = sum(r["inherited"] > r["scratch"] for r in rows)
    from scipy.stats import spearmanr

    rho = float(spearmanr([r["scratch"] for r in rows], [r["inherited"] for r in rows]).statistic)
    roots = {k: net2net.accuracy[k] for k, p in net2net.parents.items() if p is None}
    print(f"\nmean accuracy: scratch {mean_s:.2f}, inherited {mean_i:.2f} ({wins}/{len(rows)} archs better "
          f"inherited); wall time: scratch {t_scratch:.1f} s, inherited {t_inherit:.1f} s (root included); "
          f"root accuracy {', '.join(f'{a:.2f}' for a in roots.values())}; Spearman rho of the two rankings {rho:.2f}")
    tag = "digits" if args.data == "digits" else Path(args.data.split(":", 1)[-1]).name
    path = save(f"net2net_inheritance_{tag}", {
        "data": data.name, "archs": len(rows), "epochs": args.epochs, "resolution": resolution, "threads": 1,
        "mean_scratch": mean_s, "mean_inherited": mean_i, "inherited_better": wins,
        "spearman_scratch_vs_inherited": rho, "root_accuracy": list(roots.values()),
        "seconds_scratch": t_scratch, "seconds_inherited": t_inherit,
        "rows": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
