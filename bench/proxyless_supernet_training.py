"""Does the ProxylessNAS over-parameterised network learn at CPU budgets? Training loss by weight sharing.

The same ``mbv3-tiny`` over-parameterised network (9 candidate MBConvs per block, 32 px) is trained with
binarized weight steps only (no architecture steps; ``alpha`` uniform), SGD-Nesterov at each learning
rate of ``--lrs`` (default 0.1), batch 32, on ``--data`` (default the built-in digits; ``npz:PATH`` for the
CIFAR-10 reference images), in three ways:

- ``one fixed path``: the same path every step (k3e3 everywhere): one ordinary network, the reference;
- ``sampled paths, separate weights``: ProxylessNAS as published, a path sampled per block per step, each
  candidate with its own weights (each trains about one step in nine);
- ``sampled paths, nested weights``: the same sampling with ``--weight-sharing nested`` (a block's
  candidates are views of one elastic block, so every step trains weights every candidate uses).

Reported: the mean training loss over windows of steps and, at the end, the validation accuracy of 20
sampled paths with the trained weights, each extracted and its batch-norm statistics recomputed on 500
training images (a nested block's statistics mix every candidate's).
Writes ``bench/results/proxyless_supernet_training.json``.

    python bench/proxyless_supernet_training.py [--steps 300] [--seeds 0,1]
    python bench/proxyless_supernet_training.py --data npz:../shared/data/cifar10 --lrs 0.1,0.03 \
        --steps 600 --seeds 0 --out bench/results/proxyless_supernet_training_cifar.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgenas.data import load_dataset  # noqa: E402
from edgenas.io import atomic_write_json, machine_info  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402
from edgenas.supernets.bn_calibration import recalibrate_bn  # noqa: E402
from edgenas.supernets.proxyless import ProxylessSupernet  # noqa: E402

MODES = {"one fixed path": ("fixed", "none"), "sampled paths, separate weights": ("sampled", "none"),
         "sampled paths, nested weights": ("sampled", "nested")}


def train(data, paths: str, sharing: str, steps: int, seed: int, window: int, lr: float) -> dict:  # noqa: ANN001
    space = get_space("mbv3-tiny")
    net = ProxylessSupernet(space, data.num_classes, data.in_channels, resolution=32, seed=seed, sharing=sharing)
    x_train, x_val = data.at_resolution(32)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9, nesterov=True)
    losses: list[float] = []
    t0 = time.perf_counter()
    net.train()
    def next_path() -> list[int]:
        if paths == "fixed":
            net.fix([0] * len(net.mixed))
            return [0] * len(net.mixed)
        return net.sample_paths(gen)

    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (32,), generator=gen)
        next_path()
        loss = F.cross_entropy(net(x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    accs = []
    with torch.no_grad():
        for _ in range(20):
            model = recalibrate_bn(net.extract(net.arch_of(next_path())), x_train[:500])
            accs.append(100.0 * float((model(x_val).argmax(1) == data.y_val).float().mean()))
    curve = [float(np.mean(losses[i : i + window])) for i in range(0, steps, window)]
    return {"loss_by_window": curve, "val_acc_mean": float(np.mean(accs)), "val_acc_std": float(np.std(accs)),
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lrs", default="0.1", help="weight learning rates, each a row per mode")
    ap.add_argument("--data", default="digits", help="digits (default) or npz:PATH (CIFAR-10 reference images)")
    ap.add_argument("--max-train", type=int, default=5000, help="training images used (the first N)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/proxyless_supernet_training.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    data = load_dataset(args.data)
    data = data.subset(args.max_train) if args.max_train else data
    rows = {}
    for lr in lrs:
        for mode, (paths, sharing) in MODES.items():
            name = mode if lrs == [0.1] else f"{mode}, lr {lr:g}"
            runs = [train(data, paths, sharing, args.steps, s, args.window, lr) for s in seeds]
            rows[name] = {"lr": lr, "runs": runs,
                          "loss_by_window": np.mean([r["loss_by_window"] for r in runs], axis=0).tolist(),
                          "val_acc_mean": float(np.mean([r["val_acc_mean"] for r in runs]))}
            print(f"{name:44s} loss per {args.window} steps: "
                  + " ".join(f"{v:.2f}" for v in rows[name]["loss_by_window"])
                  + f" | val acc of sampled paths {rows[name]['val_acc_mean']:.1f} %", flush=True)
    atomic_write_json(args.out, {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                                 "machine": machine_info(), "threads": 1, "steps": args.steps,
                                 "window": args.window, "seeds": seeds,
                                 "data": f"{args.data} at 32 px (first {args.max_train} training images), batch 32",
                                 "modes": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
