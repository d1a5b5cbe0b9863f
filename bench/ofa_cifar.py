"""Once-for-All on CIFAR-10 images with ``mbv3-tiny``: progressive shrinking vs joint training vs from scratch,
the accuracy predictor, the finder's speed, and specialisation for several targets.

All on the shared CIFAR-10 images (the reference copy of the *test* split, 80 % train / 20 % validation),
single-threaded, checkpointed under ``--work``: re-running the same command resumes where it stopped.

    EDGENAS_DATA=../shared/data nice -n 5 python bench/ofa_cifar.py > runs/ofa_cifar.log 2>&1 &
    python bench/ofa_cifar.py --quick          # a smoke run on a few hundred images

Steps (each cached): 1. progressive shrinking (``--ps``), 2. joint training (``--joint``, same epochs),
3. ten seeded random subnets: supernet weights + BN recalibration for both supernets, and the same arch
trained from scratch for the same number of epochs, 4. accuracy pairs from the PS supernet and the
predictor's Spearman / RMSE on ``--holdout`` held-out subnets (whose per-image results are kept for the
measurement-noise ceiling; a work folder from before that measures its held-out pairs again), 5. the
finder's candidates per second (population 100, 500 generations) on the full ``mbv3`` space with OFA's
Note10 table and on ``mbv3-tiny`` with this CPU's table, 6. specialisation for ``cpu``, this CPU's table
and a roofline device.

Writes ``bench/results/ofa_cifar.json``.

On a GPU (``--device cuda``) the stages that do not depend on each other can run side by side in separate
processes sharing the work folder (``--stage ps``, ``--stage joint``, ``--stage scratch --shard 0/5``,
``--stage pairs --shard 1/4``; each caches what it computes), then a plain run (``--stage all``) gathers
them; ``bench/ofa_cifar_gpu.sh`` does this. A tiny network leaves a GPU mostly idle, so the stages overlap
well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import RESULTS, save  # noqa: E402
from edgenas.data import load_dataset  # noqa: E402
from edgenas.estimators.accuracy_predictor import AccuracyPredictor, GeneCodec  # noqa: E402
from edgenas.estimators.measurement_noise import split_half_noise  # noqa: E402
from edgenas.estimators.train import TrainRecipe, evaluate_accuracy, torch_device, train_model  # noqa: E402
from edgenas.io import atomic_write_json, machine_info  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402
from edgenas.supernets.shrinking import ShrinkConfig, load_supernet, train_supernet  # noqa: E402
from edgenas.supernets.specialize import cached_hits, evaluate_subnet, measure_pairs, specialize  # noqa: E402

TRAIN_SEED, HOLDOUT_SEED = 11, 12  # seeds of the predictor's training and held-out subnets
SUBNET_SEED = 2024  # seed of the 10 subnets compared across PS, joint and from scratch


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def cached(path: Path, fn):  # noqa: ANN001, ANN201 - a tiny memo helper
    if path.exists():
        return json.loads(path.read_text())
    value = fn()
    atomic_write_json(path, value)
    return value


def finder_speed(space_name: str, target: str, data_dir: str | None, pred_space_pairs: tuple | None,
                 predictor: AccuracyPredictor | None, budget: float, seeds: int = 3) -> dict:
    """Candidates per second of the vectorised finder (population 100, 500 generations)."""
    from edgenas.evaluators import EvalContext, make_target
    from edgenas.search.ofa_evolution import EvolutionConfig, batched_latency, evolve
    from edgenas.supernets.specialize import table_coverage

    if data_dir:
        os.environ.setdefault("EDGENAS_DATA", data_dir)
    space = get_space(space_name)
    codec = GeneCodec(space)
    classes = 1000 if space_name == "mbv3" else 10
    ctx = EvalContext(space, data_spec="synthetic")
    ctx.__dict__["data"] = type("D", (), {"num_classes": classes, "in_channels": 3})()
    ev = make_target(target, ctx)
    lat_fn, how = batched_latency(ev, codec, classes, 3)
    allowed = table_coverage(ev, codec)
    if predictor is None:  # a predictor of the same size, fitted on synthetic accuracies (speed only)
        from edgenas.search.ofa_evolution import GenePool

        rng = np.random.default_rng(0)
        g = GenePool(codec, allowed).random(300, rng)
        y = 70 + 0.1 * lat_fn(g) + rng.normal(0, 1, len(g))
        predictor = AccuracyPredictor(space, epochs=200).fit(g, y)
    runs = []
    for s in range(seeds):
        r = evolve(codec, predictor.predict_genes, lat_fn, budget, EvolutionConfig(seed=s), target, allowed)
        runs.append({"seconds": r.seconds, "cpu_seconds": r.cpu_seconds, "candidates": r.candidates,
                     "proposals": r.proposals, "candidates_per_cpu_second": r.candidates / max(r.cpu_seconds, 1e-9),
                     "candidates_per_second": r.candidates_per_second, "latency_ms": r.latency,
                     "fallbacks": r.fallbacks, "predicted_accuracy": r.accuracy})
    reference = None
    if how == "lut":  # OFA's one-candidate-at-a-time finder on the same table and predictor, side by side
        from ofa_reference_finder import ReferenceFinder

        reference = {}
        for variant, ofa_lookups in (("fast_parts", False), ("ofa_lookups", True)):
            finder = ReferenceFinder(codec, lat_fn, allowed, predictor.predict_genes, ofa_lookups)
            ref_runs = [finder.run(budget, seed=s) for s in range(seeds)]
            reference[variant] = {"runs": ref_runs, "median_candidates_per_second": float(np.median(
                [r["candidates_per_second"] for r in ref_runs])), "median_candidates_per_cpu_second": float(
                np.median([r["candidates_per_cpu_second"] for r in ref_runs]))}
    big = evolve(codec, predictor.predict_genes, lat_fn, budget, EvolutionConfig(population=1000, generations=50),
                 target, allowed)
    scaling = {"population": 1000, "generations": 50, "candidates_per_second": big.candidates_per_second,
               "candidates_per_cpu_second": big.candidates / max(big.cpu_seconds, 1e-9)}
    return {"space": space_name, "target": target, "latency_model": how, "budget_ms": budget, "scaling": scaling,
            "population": 100, "generations": 500, "runs": runs,
            "median_candidates_per_second": float(np.median([r["candidates_per_second"] for r in runs])),
            "median_candidates_per_cpu_second": float(np.median([r["candidates_per_cpu_second"] for r in runs])),
            "median_proposals_per_second": float(np.median([r["proposals"] / r["seconds"] for r in runs])),
            "reference_finder": reference,
            "speedup_over_reference": None if reference is None else {
                k: float(np.median([r["candidates_per_second"] for r in runs])) / v["median_candidates_per_second"]
                for k, v in reference.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"))
    ap.add_argument("--work", default="runs/ofa_cifar")
    ap.add_argument("--out", default=str(RESULTS / "ofa_cifar.json"))
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--max-val", type=int, default=2000)
    ap.add_argument("--ps", default="full:2,kernel:1,depth:1,expand:1")
    ap.add_argument("--joint", default="joint:5")
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--pair-val", type=int, default=1000, help="validation images per accuracy pair")
    ap.add_argument("--recal", type=int, default=500, help="training images for BN recalibration")
    ap.add_argument("--pair-recal", type=int, default=500, help="BN recalibration images per accuracy pair")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few images, few pairs")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--augment", action="store_true", help="random crops and flips, supernets and scratch alike")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--kd-ratio", type=float, default=1.0, help="distillation weight of the PS supernet's later phases")
    ap.add_argument("--stage", default="all", choices=("all", "ps", "joint", "scratch", "pairs"),
                    help="run one independent stage and stop (to run stages side by side), or all")
    ap.add_argument("--shard", default="0/1", help="i/n: this process's share of --stage scratch or pairs")
    ap.add_argument("--no-specialize", action="store_true", help="skip the finder's speed and specialisation")
    ap.add_argument("--finder-only", action="store_true",
                    help="only the finder's speed (synthetic predictors of the right size), written to "
                         "bench/results/ofa_finder_speed.json; no supernet is trained")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch_device(args.device)
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    if args.quick:
        args.max_train, args.max_val, args.pairs, args.holdout, args.subnets = 256, 128, 20, 10, 2
        args.ps, args.joint, args.recal, args.pair_val = "full:1,kernel:1,depth:1,expand:1", "joint:4", 64, 128
        args.pair_recal = 64
        args.work, args.out = args.work + "_quick", str(RESULTS / "ofa_cifar_quick.json")
    if not args.bench_data:
        sys.exit("set EDGENAS_DATA or pass --bench-data (the reference-data folder)")
    if args.finder_only:
        speeds = [finder_speed("mbv3", "note10", args.bench_data, None, None, 25.0)]
        lut_tiny = RESULTS / "lut_mbv3_tiny_onnxruntime_1t.json"
        if lut_tiny.exists():
            speeds.append(finder_speed("mbv3-tiny", f"lut:{lut_tiny.relative_to(ROOT)}", None, None, None, 0.5))
        for f in speeds:
            log(f"finder {f['space']} {f['target']}: {f['median_candidates_per_second']:,.0f} candidates/s "
                f"({f['median_candidates_per_cpu_second']:,.0f} per CPU second); population 1,000: "
                f"{f['scaling']['candidates_per_second']:,.0f}/s")
            for variant, ref in (f["reference_finder"] or {}).items():
                log(f"  OFA's per-candidate finder ({variant}), same table and predictor: "
                    f"{ref['median_candidates_per_second']:,.0f} candidates/s; ours "
                    f"{f['speedup_over_reference'][variant]:.1f}x faster")
        atomic_write_json(RESULTS / "ofa_finder_speed.json", {
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
            "loadavg": os.getloadavg()[0], "finder_speed": speeds})
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    data = load_dataset(f"npz:{Path(args.bench_data) / 'cifar10'}").subset(args.max_train, args.max_val)
    data = data.to(device)
    log(f"data: {len(data.x_train)} train / {len(data.x_val)} validation images, on {device}")
    space = get_space("mbv3-tiny")
    epochs = sum(int(p.split(":")[1]) for p in args.ps.split(","))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    figures: dict = {"settings": vars(args), "epochs": epochs, "device": where,
                     "data": f"CIFAR-10 test split copy, {len(data.x_train)} train / {len(data.x_val)} val"}
    timings: dict = {}

    # 3. ten seeded random subnets (drawn first: the scratch stage needs no supernet)
    rng = np.random.default_rng(SUBNET_SEED)
    archs = [space.sample(rng) for _ in range(args.subnets)]

    def scratch(i: int) -> dict:
        a, t = archs[i], time.time()
        model = space.build(a, data.num_classes, data.in_channels, seed=i)
        model = model.to(device, memory_format=torch.channels_last)
        x_tr, x_val = data.at_resolution(space.resolution(a))
        recipe = TrainRecipe(epochs=epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment)
        train_model(model, x_tr, data.y_train, recipe, seed=i)
        acc = evaluate_accuracy(model, x_val, data.y_val)
        log(f"subnet {i}: scratch {acc:.2f}")
        return {"scratch": acc, "scratch_train_s": time.time() - t}

    if args.stage == "scratch":
        for i in range(shard, args.subnets, n_shards):
            cached(work / f"scratch{i}.json", lambda i=i: scratch(i))
        return

    # 1-2. supernets
    for label, schedule in (("ps", args.ps), ("joint", args.joint)):
        if args.stage not in ("all", label):
            continue
        d = work / label
        if not (d / "supernet.pt").exists():
            t = time.time()
            cfg = ShrinkConfig(schedule=schedule, seed=0, batch_size=args.batch_size, lr=args.lr,
                               augment=args.augment, kd_ratio=args.kd_ratio)
            train_supernet(space, data, d, cfg, resume=True, progress=log, device=device)
            timings[f"train_{label}_s"] = time.time() - t
        figures[f"history_{label}"] = json.loads((d / "history.json").read_text())["history"]
    if args.stage in ("ps", "joint"):
        return
    ps, _ = load_supernet(work / "ps" / "supernet.pt", space)
    ps = ps.to(device)
    tag = f"v{args.pair_val}_r{args.pair_recal}"
    pair_sets = ((args.pairs, TRAIN_SEED, work / f"pairs_train_{tag}.jsonl"),
                 (args.holdout, HOLDOUT_SEED, work / f"pairs_test_{tag}.jsonl"))
    if args.stage == "pairs":  # shard i measures every n-th pair into its own cache, gathered below
        for n, seed, path in pair_sets:
            measure_pairs(ps, data, n, seed, args.pair_recal, args.pair_val, path.with_suffix(f".{shard}.jsonl"),
                          log, shard=(shard, n_shards), keep_hits=seed == HOLDOUT_SEED)
        return
    joint, _ = load_supernet(work / "joint" / "supernet.pt", space)
    joint = joint.to(device)

    def supernet_eval(i: int) -> dict:
        a, t = archs[i], time.time()
        acc_ps = evaluate_subnet(ps, a, data, args.recal)[1]
        acc_joint = evaluate_subnet(joint, a, data, args.recal)[1]
        return {"arch": a, "ps": acc_ps, "joint": acc_joint, "supernet_eval_s": time.time() - t}

    rows = []
    for i in range(args.subnets):
        row = {**cached(work / f"subnet{i}.json", lambda i=i: supernet_eval(i)),
               **cached(work / f"scratch{i}.json", lambda i=i: scratch(i))}
        log(f"subnet {i}: PS {row['ps']:.2f}  joint {row['joint']:.2f}  scratch {row['scratch']:.2f}")
        rows.append(row)
    ps_m, jo_m, sc_m = (float(np.mean([r[k] for r in rows])) for k in ("ps", "joint", "scratch"))
    figures["subnets"] = rows
    figures["subnets_mean"] = {"ps": ps_m, "joint": jo_m, "scratch": sc_m,
                               "ps_minus_scratch": [r["ps"] - r["scratch"] for r in rows],
                               "within_2_points_of_scratch": sum(r["ps"] >= r["scratch"] - 2 for r in rows)}
    log(f"mean of {len(rows)} subnets: PS {ps_m:.2f}, joint {jo_m:.2f}, scratch {sc_m:.2f}")

    # 4. accuracy predictor
    t = time.time()
    (tr_archs, tr_acc), (te_archs, te_acc) = (
        measure_pairs(ps, data, n, seed, args.pair_recal, args.pair_val, path, log,
                      extra_caches=sorted(path.parent.glob(path.stem + ".*.jsonl")), keep_hits=seed == HOLDOUT_SEED)
        for n, seed, path in pair_sets)
    timings["pairs_s"] = time.time() - t
    t = time.time()
    pred = AccuracyPredictor(space).fit(tr_archs, tr_acc)
    timings["predictor_fit_s"] = time.time() - t
    pred.save(work / "accuracy_predictor.npz")
    p = pred.predict(te_archs)
    te = np.asarray(te_acc)
    figures["predictor"] = {
        "train_pairs": len(tr_acc), "holdout": len(te_acc), "val_images_per_pair": args.pair_val,
        "recal_images_per_pair": args.pair_recal,
        "spearman": float(spearmanr(p, te)[0]), "rmse": float(np.sqrt(np.mean((p - te) ** 2))),
        "holdout_accuracy_std": float(te.std()), "holdout_accuracy_range": [float(te.min()), float(te.max())],
        "baseline_rmse_mean": float(np.sqrt(np.mean((te.mean() - te) ** 2))),
    }
    n_val = len(data.x_val) if args.pair_val is None else min(args.pair_val, len(data.x_val))
    hits = cached_hits(ps, te_archs, n_val, sorted(work.glob(f"pairs_test_{tag}*.jsonl")))
    if hits is not None:  # how far any predictor could go against these measurements (measurement_noise)
        figures["predictor"]["measurement_noise"] = split_half_noise(hits).to_json()
    log(f"predictor: {figures['predictor']}")

    if args.no_specialize:
        figures["timings_s"] = {**timings, "total_this_invocation": time.time() - t_start}
        log(f"wrote {save(Path(args.out).stem, figures)}")
        return
    ps = ps.cpu()

    # 5. finder speed
    figures["finder_speed"] = []
    if (Path(args.bench_data) / "ofa_mbv3" / "lut").is_dir():
        figures["finder_speed"].append(finder_speed("mbv3", "note10", args.bench_data, None, None, 25.0))
    lut_tiny = RESULTS / "lut_mbv3_tiny_onnxruntime_1t.json"
    if lut_tiny.exists():
        figures["finder_speed"].append(finder_speed("mbv3-tiny", f"lut:{lut_tiny}", None, None, pred, 0.5))
    for f in figures["finder_speed"]:
        log(f"finder {f['space']} {f['target']}: {f['median_candidates_per_second']:,.0f} candidates/s")

    # 6. specialisation
    targets = ["cpu", f"lut:{lut_tiny}", "raspi4", "jetson-nano"]
    budgets = [0.32, 0.28, 0.10, 0.025]
    sp = specialize(ps, data, f"npz:{Path(args.bench_data) / 'cifar10'}", targets, budgets, work / "specialize",
                    predictor=pred, recal=args.recal, progress=log)
    figures["specialize"] = {"targets": targets, "budgets_ms": budgets, "rows": sp.rows, "cross": sp.cross,
                             "markdown": sp.markdown}
    print(sp.markdown)
    figures["timings_s"] = {**timings, "total_this_invocation": time.time() - t_start}
    path = save(Path(args.out).stem, figures)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
