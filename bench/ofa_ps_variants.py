"""Progressive-shrinking recipes side by side: distillation on or off and the length of the full phase, each
judged on ``bench/ofa_cifar.py``'s 10 seeded subnets (supernet weights + BN recalibration) against that
bench's joint supernet and from-scratch figures for the same subnets, data and epochs.

    # train (``bench/ofa_ps_variants.sh``, on a GPU: one process per variant, side by side), then per variant
    python bench/ofa_ps_variants.py eval runs/v_A runs/v_A.json --kd-ratio 0 --device cuda
    # gather the variants' JSON into bench/results/<--name>.json, with the baseline's joint and scratch means
    python bench/ofa_ps_variants.py gather runs/v_*.json --baseline bench/results/ofa_cifar_gpu.json

The data and subnets are the bench's: CIFAR-10 images from ``EDGENAS_DATA``, ``--max-train`` / 2,000 images,
its ``SUBNET_SEED`` for the 10 archs, 1,000 recalibration images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from bench.ofa_cifar import SUBNET_SEED  # noqa: E402


def evaluate(args: argparse.Namespace) -> None:
    from edgenas.data import load_dataset
    from edgenas.spaces import get_space
    from edgenas.supernets.shrinking import load_supernet
    from edgenas.supernets.specialize import evaluate_subnet

    space = get_space("mbv3-tiny")
    data = load_dataset(f"npz:{Path(os.environ['EDGENAS_DATA']) / 'cifar10'}").subset(args.max_train, 2000)
    data = data.to(args.device)
    rng = np.random.default_rng(SUBNET_SEED)
    archs = [space.sample(rng) for _ in range(args.subnets)]
    net, _ = load_supernet(Path(args.work) / "ps" / "supernet.pt", space)
    net = net.to(args.device)
    t = time.time()
    accs = [evaluate_subnet(net, a, data, args.recal)[1] for a in archs]
    history = json.loads((Path(args.work) / "ps" / "history.json").read_text())
    res = {"work": args.work, "schedule": history["config"]["schedule"], "kd_ratio": history["config"]["kd_ratio"],
           "ps": accs, "mean": float(np.mean(accs)), "eval_s": time.time() - t, "history": history["history"]}
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"{args.work}: {res['schedule']} kd {res['kd_ratio']}: mean {res['mean']:.2f} ({accs})", flush=True)


def gather(args: argparse.Namespace) -> None:
    base = json.loads(Path(args.baseline).read_text())
    rows = base["subnets"]
    joint, scratch = (float(np.mean([r[k] for r in rows])) for k in ("joint", "scratch"))
    variants = []
    for f in args.files:
        v = json.loads(Path(f).read_text())
        ps = np.asarray(v["ps"])
        variants.append({
            "schedule": v["schedule"], "kd_ratio": v["kd_ratio"], "ps": v["ps"], "mean": float(ps.mean()),
            "minus_joint": float(ps.mean() - joint), "beats_joint_on": int(sum(ps > [r["joint"] for r in rows])),
            "minus_scratch": float(ps.mean() - scratch),
            "within_2_of_scratch": int(sum(ps >= np.asarray([r["scratch"] for r in rows]) - 2)),
            "largest_end": v["history"][-1]["acc_largest"], "smallest_end": v["history"][-1]["acc_smallest"],
            "train_s": v["history"][-1]["seconds"],
        })
    print(f"| PS schedule | KD | mean of 10 | − joint ({joint:.2f}) | beats joint on | − scratch ({scratch:.2f}) |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        print(f"| {v['schedule']} | {v['kd_ratio']:g} | {v['mean']:.2f} | {v['minus_joint']:+.2f} | "
              f"{v['beats_joint_on']} / 10 | {v['minus_scratch']:+.2f} |")
    path = save(args.name, {"baseline": args.baseline, "device": args.device_name, "joint_mean": joint,
                            "scratch_mean": scratch, "variants": variants})
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="the 10 subnets of one trained variant (WORK/ps/supernet.pt) -> OUT")
    ev.add_argument("work")
    ev.add_argument("out")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--max-train", type=int, default=8000)
    ev.add_argument("--subnets", type=int, default=10)
    ev.add_argument("--recal", type=int, default=1000)
    ga = sub.add_parser("gather", help="variants' JSON -> bench/results/NAME.json and a table")
    ga.add_argument("files", nargs="+")
    ga.add_argument("--baseline", default=str(ROOT / "bench" / "results" / "ofa_cifar_gpu.json"))
    ga.add_argument("--name", default="ofa_ps_variants_gpu")
    ga.add_argument("--device-name", default="", help="where the variants were trained, for the record")
    args = ap.parse_args()
    evaluate(args) if args.cmd == "eval" else gather(args)


if __name__ == "__main__":
    main()
