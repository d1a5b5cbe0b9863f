"""ProxylessNAS quality under another from-scratch recipe: the derived architectures and the random peers of
similar measured latency that ``bench/proxyless_targets.py`` stored, trained again with the recipe given here.

The quality target (a derived arch at least as accurate as the mean of its 5 peers, same recipe) depends on
the recipe: ``proxyless_targets.py`` trains 3 epochs, which favours shallow networks. This script re-uses the
stored architectures (no search, no latency measurement, so the machine need not be quiet) and trains each
with ``--epochs`` (and ``--augment``), one cached JSON per architecture under ``--work``; ``--shard i/n``
splits the work across processes and a last run without it gathers the table. ``--seeds N`` trains every
architecture with N seeds and compares the means, so the verdict is about architectures, not seeds.

    python bench/proxyless_quality_recipe.py --from bench/results/proxyless_targets.json --epochs 8 --augment \\
        --shard 0/2 &  # and --shard 1/2; then once more without --shard
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from edgenas.io import atomic_write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA", str(ROOT.parent / "shared/data")))
    ap.add_argument("--from", dest="source", default=str(ROOT / "bench/results/proxyless_targets.json"),
                    help="a proxyless_targets result holding searches and quality peers")
    ap.add_argument("--targets", default="tight,medium,loose")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--no-zero-gamma", action="store_true",
                    help="train without zero-gamma residual blocks (the recipe of results before 2026-11-29)")
    ap.add_argument("--max-train", type=int, default=5000)
    ap.add_argument("--work", default="runs/proxyless_quality_recipe")
    ap.add_argument("--shard", default=None, help="i/n: train only this share, do not write the table")
    ap.add_argument("--seeds", type=int, default=1,
                    help="train every architecture with seeds 0..N-1 and compare the means (one seed's spread is "
                         "as large as the differences being judged)")
    args = ap.parse_args()

    import torch

    from edgenas.data import load_dataset
    from edgenas.estimators.train import TrainEstimator, TrainRecipe
    from edgenas.spaces import get_space

    torch.set_num_threads(1)
    source = json.loads(Path(args.source).read_text())
    space = get_space("mbv3-tiny")
    jobs = []
    for name in args.targets.split(","):
        if name not in source.get("quality", {}):
            sys.exit(f"'{args.source}' has no quality results for target '{name}'")
        jobs.append((name, "derived", source["searches"][name]["arch"]))
        jobs += [(name, f"peer{i}", p["arch"]) for i, p in enumerate(source["quality"][name]["peers"])]
    recipe = TrainRecipe(epochs=args.epochs, batch_size=32, augment=args.augment,
                         zero_last_gamma=not args.no_zero_gamma)
    tag = f"e{args.epochs}{'_aug' if args.augment else ''}_n{args.max_train}{'' if args.no_zero_gamma else '_zg'}"
    work = Path(args.work) / tag
    work.mkdir(parents=True, exist_ok=True)
    data = load_dataset(f"npz:{Path(args.bench_data) / 'cifar10'}").subset(args.max_train)
    estimators = [TrainEstimator(space, data, seed=seed, recipe=recipe) for seed in range(args.seeds)]
    shard, n_shards = (int(v) for v in (args.shard or "0/1").split("/"))
    per_seed: dict[tuple[str, str], list[float]] = {}
    for i, ((name, who, arch), seed) in enumerate((job, seed) for seed in range(args.seeds) for job in jobs):
        key = hashlib.sha256(space.key(arch).encode()).hexdigest()[:16]
        path = work / (key + ("" if seed == 0 else f"_seed{seed}") + ".json")
        if not path.exists() and i % n_shards == shard:
            t = time.time()
            atomic_write_json(path, {"arch": arch, "seed": seed, "accuracy": estimators[seed](arch),
                                     "seconds": time.time() - t})
            print(f"{name} {who} seed {seed}: {json.loads(path.read_text())['accuracy']:.2f} %", flush=True)
        if path.exists():
            per_seed.setdefault((name, who), []).append(json.loads(path.read_text())["accuracy"])
    if args.shard is not None:
        return
    missing = [k for k in ((n, w) for n, w, _ in jobs) if len(per_seed.get(k, [])) < args.seeds]
    if missing:
        sys.exit(f"{len(missing)} architectures lack a seed's result (first: {missing[0]}); run the shards first")
    results = {k: float(np.mean(v)) for k, v in per_seed.items()}
    rows = {}
    for name in args.targets.split(","):
        peers = [results[(name, w)] for n, w, _ in jobs if n == name and w.startswith("peer")]
        derived = results[(name, "derived")]
        old = source["quality"][name]
        rows[name] = {"derived": derived, "peers": peers, "peer_mean": float(np.mean(peers)),
                      "peer_std": float(np.std(peers)), "derived_minus_peer_mean": derived - float(np.mean(peers)),
                      "derived_at_least_mean": derived >= float(np.mean(peers)),
                      "derived_per_seed": per_seed[(name, "derived")],
                      "peers_per_seed": [per_seed[(n, w)] for n, w, _ in jobs if n == name and w.startswith("peer")],
                      "source_recipe": {"derived": old["derived_accuracy"], "peer_mean": old.get("peer_mean")}}
        print(f"{name}: derived {derived:.2f} vs peers {float(np.mean(peers)):.2f} +- {float(np.std(peers)):.2f} "
              f"({', '.join(f'{p:.1f}' for p in peers)}); with the source's recipe {old['derived_accuracy']:.2f} "
              f"vs {old.get('peer_mean', float('nan')):.2f}", flush=True)
    # Does the recipe reward capacity? Rank correlation of measured latency and accuracy over every network
    # trained (derived and peers of all targets): a recipe under which slower networks come out *less* accurate
    # measures how fast a network trains, not how good it is, and no search can beat its peers under it.
    measured = {(name, "derived"): source["steering"].get(name, {}).get("derived", {}).get("measured_ms")
                for name in args.targets.split(",")}
    measured.update({(name, f"peer{i}"): p.get("measured_ms") for name in args.targets.split(",")
                     for i, p in enumerate(source["quality"][name]["peers"])})
    pairs = [(measured[k], results[k]) for k in results if measured.get(k) is not None]
    from scipy.stats import spearmanr

    rho = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs])[0]) if len(pairs) > 2 else None
    print(f"latency vs accuracy over {len(pairs)} networks: Spearman {rho:+.3f}" if rho is not None else "", flush=True)
    seeds_tag = "" if args.seeds == 1 else f"_seeds{args.seeds}"
    out = save(f"proxyless_quality_{Path(args.source).stem}_{tag}{seeds_tag}", {
        "source": str(Path(args.source).relative_to(ROOT)) if Path(args.source).is_relative_to(ROOT) else args.source,
        "source_recipe": source.get("quality_recipe"),
        "recipe": (f"from scratch, {args.epochs} epochs, SGD-Nesterov lr 0.1 cosine, batch 32, label smoothing 0.1"
                   f"{', random crops (pad 4) and flips' if args.augment else ''}"
                   f"{'' if args.no_zero_gamma else ', zero-gamma residual blocks'}, first {args.max_train} training "
                   f"images, validated on the 2,000 held-out images, "
                   f"{'seed 0' if args.seeds == 1 else f'seeds 0-{args.seeds - 1}, the mean per architecture'}"),
        "targets": rows,
        "latency_accuracy_spearman": {"rho": rho, "networks": len(pairs),
                                      "is": "measured latency vs accuracy (mean over seeds), every network trained"}})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
