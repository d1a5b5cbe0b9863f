"""HAT end to end on this CPU: SuperTransformer, measured latency predictor, inherited vs from-scratch ranking,
and latency-constrained search against uniformly scaled Transformers.

Wang et al. (HAT, ACL 2020) train one SuperTransformer by sampling SubTransformers, fit a latency predictor on
measured SubTransformers, and search with the SuperTransformer's weights as the judge; they report that
inherited and from-scratch quality rank SubTransformers alike and that searched SubTransformers beat the
uniformly scaled Transformer at the same latency. On a built-in task (``--data reverse``, the default, or the
harder ``bigram``) with ``hat-tiny``:

1. ``train``: the SuperTransformer, ``--steps`` steps (uniform sampling, one SubTransformer per step);
2. ``latency``: ``--measure N`` SubTransformers timed on this CPU (one sentence of 12 tokens in, 12 out; each
   in a fresh process, one thread); a ``gbt`` predictor on HAT's ten features fitted on 80 %, its fidelity
   on the held-out 20 % (and MACs' Spearman for comparison), then refitted on all for the search;
3. ``inherit``: ``--subnets`` random SubTransformers, validation loss with inherited weights vs trained from
   scratch for ``--retrain-steps`` steps (same recipe): Spearman rho of the two rankings;
4. ``search``: three budgets (the 20th, 50th and 80th percentile of the measured latencies); per budget HAT's
   evolutionary search against the best *homogeneous* SubTransformer (the same FFN dim and heads in every
   layer, both embedding dims equal, encoder-decoder attention to the last layer only: a scaled-down
   Transformer) within the same predicted budget, judged by inherited validation loss; both are then
   measured and retrained from scratch (``--retrain-steps``), validation loss and test BLEU reported. The
   search's answer is measured (median of 3 fresh processes) and, while it breaks the budget, searched again
   with a tighter predicted budget (``search_and_verify``, what ``edgenas hat search --measure`` does).

    python bench/hat_supertransformer.py            # ~20 minutes, one thread; --work keeps the stages' files
    python bench/hat_supertransformer.py --remeasure   # measure the found SubTransformers again (quiet machine)
    python bench/hat_supertransformer.py --data bigram  # the harder task (work folder runs/bench_hat_bigram)
    python bench/hat_supertransformer.py --data bigram --retrain-again 3000  # the found ones, trained longer

Writes ``bench/results/hat_supertransformer.json`` (``hat_supertransformer_bigram.json`` for ``bigram``).
"""

from __future__ import annotations

import argparse
import itertools
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
from edgenas.hardware.transformer_latency import TranslationTiming, collect_dataset, measure_translation  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402
from edgenas.supernets.hat import (  # noqa: E402
    HATTrainConfig,
    bleu,
    load_supertransformer,
    train_subtransformer,
    train_supertransformer,
    validation_loss,
)
from edgenas.supernets.hat_search import HATSearchConfig, describe_arch, search_and_verify  # noqa: E402
from edgenas.translation_data import load_parallel  # noqa: E402


def spearman(a, b) -> float:  # noqa: ANN001
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def homogeneous(space) -> list[dict]:  # noqa: ANN001
    """Uniformly scaled SubTransformers: one embed dim, one FFN dim, one head count, ende attention to 1 layer."""
    cfg = space.hat
    out = []
    for e, f, h, d in itertools.product(cfg.embed, cfg.ffn, cfg.heads, range(1, cfg.max_decoder_layers + 1)):
        a = {"encoder_embed_dim": e, "decoder_embed_dim": e, "decoder_layer_num": d}
        for i in range(1, cfg.encoder_layers + 1):
            a.update({f"enc{i}.ffn": f, f"enc{i}.heads": h})
        for j in range(1, cfg.max_decoder_layers + 1):
            a.update({f"dec{j}.ffn": f, f"dec{j}.heads": h, f"dec{j}.ende_heads": h,
                      f"dec{j}.ende_layers": min(cfg.ende_layers)})
        out.append(space.validate(a))
    return out


def measured_ms(space, arch: dict, timing: TranslationTiming) -> float:  # noqa: ANN001
    """Encoder + decoder latency: the median of 3 fresh-process measurements."""
    runs = [measure_translation(space, arch, timing) for _ in range(3)]
    return float(np.median([r["latency_mean_encoder"] + r["latency_mean_decoder"] for r in runs]))


def result_name(data: str) -> str:
    return "hat_supertransformer" if data == "reverse" else f"hat_supertransformer_{data}"


def found_subtransformers(stored: dict) -> list[tuple[dict, str, dict]]:
    """(search entry, 'hat' | 'homogeneous', arch) of every SubTransformer a stored run's search found."""
    return [(entry, name, entry[name]["arch_dict"]) for entry in stored["search"]
            for name in ("hat", "homogeneous") if entry.get(name)]


def load_stored(data_name: str) -> dict:
    import json

    from bench._common import RESULTS

    return json.loads((RESULTS / f"{result_name(data_name)}.json").read_text())


def save_beside(data_name: str, stored: dict) -> None:
    """Save ``stored`` with an addition: this run's machine and command on top, the original run's kept
    under ``original_run``."""
    meta = ("benchmark", "command", "date", "machine")
    figures = {k: v for k, v in stored.items() if k not in meta and k != "original_run"}
    figures["original_run"] = stored.get("original_run") or {k: stored[k] for k in meta if k in stored}
    save(result_name(data_name), figures)


def remeasure(data_name: str) -> None:
    """Measure the stored search results' SubTransformers again (3 fresh processes each, median), kept under
    ``remeasured`` beside the original figures."""
    stored = load_stored(data_name)
    space, data = get_space("hat-tiny"), load_parallel(data_name)
    timing = TranslationTiming(src_vocab=data.src_vocab, tgt_vocab=data.tgt_vocab)
    rows = []
    for entry, name, arch in found_subtransformers(stored):
        ms = measured_ms(space, arch, timing)
        rows.append({"percentile": entry["percentile"], "which": name, "budget_ms": entry["budget_ms"],
                     "predicted_ms": entry[name]["predicted_ms"], "measured_ms": ms})
        print(f"p{entry['percentile']} {name}: budget {entry['budget_ms']:.2f} ms, predicted "
              f"{entry[name]['predicted_ms']:.2f}, measured {ms:.2f} ms")
    stored["remeasured"] = {"command": " ".join(["python", *sys.argv]), "rows": rows}
    save_beside(data_name, stored)


def retrain_again(data_name: str, steps: int, seed: int) -> None:
    """Retrain the stored search results' SubTransformers (HAT's and the homogeneous ones) from scratch for
    ``steps`` steps, kept under ``retrained`` beside the original figures."""
    stored = load_stored(data_name)
    space, data = get_space("hat-tiny"), load_parallel(data_name)
    rows = []
    for entry, name, arch in found_subtransformers(stored):
        t = time.perf_counter()
        sub = train_subtransformer(space, arch, data, HATTrainConfig(steps=steps, seed=seed))
        row = {"percentile": entry["percentile"], "which": name, "steps": steps,
               "val_loss": validation_loss(sub, arch, data.val), "test_bleu": bleu(sub, arch, data.test),
               "seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"p{row['percentile']} {name}: {steps} steps from scratch, loss {row['val_loss']:.3f}, "
              f"BLEU {row['test_bleu']:.1f} ({row['seconds']:.0f} s)", flush=True)
    stored.setdefault("retrained", {})[str(steps)] = {"command": " ".join(["python", *sys.argv]), "rows": rows}
    save_beside(data_name, stored)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="reverse", choices=("reverse", "bigram"), help="The built-in task.")
    ap.add_argument("--work", default=None, help="Folder for the stages' files (default runs/bench_hat, "
                    "runs/bench_hat_bigram for bigram).")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--measure", type=int, default=100)
    ap.add_argument("--subnets", type=int, default=8)
    ap.add_argument("--retrain-steps", type=int, default=800)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain-again", type=int, default=0, metavar="STEPS",
                    help="Retrain the stored search results' SubTransformers for STEPS steps from scratch.")
    ap.add_argument("--remeasure", action="store_true",
                    help="Only measure the stored result's SubTransformers again: median of 3 fresh processes each.")
    args = ap.parse_args()
    if args.remeasure:
        return remeasure(args.data)
    if args.retrain_again:
        return retrain_again(args.data, args.retrain_again, args.seed)
    torch.set_num_threads(1)
    work = Path(args.work or ROOT / "runs" / ("bench_hat" if args.data == "reverse" else f"bench_hat_{args.data}"))
    work.mkdir(parents=True, exist_ok=True)
    space, data = get_space("hat-tiny"), load_parallel(args.data)
    figures: dict = {"space": space.name, "data": args.data, "settings": vars(args)}

    # 1. SuperTransformer
    t0 = time.perf_counter()
    cfg = HATTrainConfig(steps=args.steps, seed=args.seed, eval_every=500, checkpoint_every=500)
    if (work / "st" / "supertransformer.pt").exists():
        print("SuperTransformer: reusing", work / "st")
    else:
        resume = (work / "st" / "last.pt").exists()
        train_supertransformer(space, data, work / "st", cfg, resume=resume, progress=print, data_spec=args.data)
    net, _ = load_supertransformer(work / "st")
    figures["supertransformer"] = {"steps": args.steps, "seconds": time.perf_counter() - t0}

    # 2. latency data and predictor
    t0 = time.perf_counter()
    timing = TranslationTiming(src_vocab=data.src_vocab, tgt_vocab=data.tgt_vocab)
    collect_dataset(space, args.measure, str(work / "latency.csv"), timing, seed=args.seed, progress=print)
    lat = read_latency_dataset(work / "latency.csv", space)
    n = len(lat.latency_ms)
    order = np.random.default_rng(args.seed).permutation(n)
    tr, te = order[: int(0.8 * n)], order[int(0.8 * n):]
    pred = LatencyPredictor(space, "gbt").fit([lat.archs[i] for i in tr], lat.latency_ms[tr])
    held = fidelity(pred.predict([lat.archs[i] for i in te]), lat.latency_ms[te])
    macs = [space.macs(lat.archs[i], 12, 12) for i in te]
    predictor = LatencyPredictor(space, "gbt").fit(lat.archs, lat.latency_ms)
    figures["latency"] = {"measured": n, "range_ms": [float(lat.latency_ms.min()), float(lat.latency_ms.max())],
                          "held_out": held, "macs_spearman": spearman(macs, lat.latency_ms[te]),
                          "seconds": time.perf_counter() - t0}
    print(f"latency: {n} measured, {lat.latency_ms.min():.2f}-{lat.latency_ms.max():.2f} ms; held-out gbt rho "
          f"{held['spearman']:.3f}, MAPE {held['mape_pct']:.1f} %; MACs rho {figures['latency']['macs_spearman']:.3f}")

    def retrain(arch: dict) -> dict:
        t = time.perf_counter()
        sub = train_subtransformer(space, arch, data, HATTrainConfig(steps=args.retrain_steps, seed=args.seed))
        return {"val_loss": validation_loss(sub, arch, data.val), "test_bleu": bleu(sub, arch, data.test),
                "seconds": time.perf_counter() - t}

    # 3. inherited vs from scratch
    rng = np.random.default_rng(args.seed + 1)
    rows = []
    for k in range(args.subnets):
        arch = space.sample(rng)
        row = {"arch": describe_arch(arch, space.hat.encoder_layers),
               "inherited_val_loss": validation_loss(net, arch, data.val),
               "inherited_test_bleu": bleu(net, arch, data.test),
               **{f"scratch_{k}": v for k, v in retrain(arch).items()}}
        rows.append(row)
        print(f"subnet {k + 1}: inherited loss {row['inherited_val_loss']:.3f} / BLEU "
              f"{row['inherited_test_bleu']:.1f}, scratch loss {row['scratch_val_loss']:.3f} / BLEU "
              f"{row['scratch_test_bleu']:.1f}")

    def column(name: str) -> list[float]:
        return [r[name] for r in rows]

    figures["inherit_vs_scratch"] = {
        "subnets": rows, "spearman_val_loss": spearman(column("inherited_val_loss"), column("scratch_val_loss")),
        "spearman_bleu": spearman(column("inherited_test_bleu"), column("scratch_test_bleu"))}
    print(f"inherited vs scratch: Spearman rho of validation loss "
          f"{figures['inherit_vs_scratch']['spearman_val_loss']:.3f}")

    # 4. search vs homogeneous baseline at three budgets
    homo = homogeneous(space)
    homo_lat = predictor.predict(homo)
    budgets = {q: float(np.percentile(lat.latency_ms, q)) for q in (20, 50, 80)}
    searches = []
    for q, budget in budgets.items():
        score = lambda archs: np.array([-validation_loss(net, a, data.val) for a in archs])  # noqa: E731
        checked = search_and_verify(space, score, lambda archs: predictor.predict(list(archs)), budget,
                                    HATSearchConfig(generations=args.generations, seed=args.seed),
                                    measure=lambda a: measured_ms(space, a, timing))
        res = checked.result
        feasible = [a for a, ms in zip(homo, homo_lat, strict=True) if ms <= budget]
        h_scores = [validation_loss(net, a, data.val) for a in feasible]
        base = feasible[int(np.argmin(h_scores))] if feasible else None
        entry = {"percentile": q, "budget_ms": budget, "search_seconds": res.seconds, "scored": res.scored,
                 "rounds": checked.rounds}
        for name, arch in (("hat", res.arch), ("homogeneous", base)):
            if arch is None:
                entry[name] = None
                continue
            entry[name] = {"arch": describe_arch(arch, space.hat.encoder_layers), "arch_dict": arch,
                           "predicted_ms": float(predictor.predict([arch])[0]),
                           "measured_ms": checked.measured if name == "hat" else measured_ms(space, arch, timing),
                           "inherited_val_loss": validation_loss(net, arch, data.val),
                           **{f"scratch_{k}": v for k, v in retrain(arch).items()}}
        searches.append(entry)
        h, b = entry["hat"], entry["homogeneous"]
        print(f"budget p{q} {budget:.2f} ms: HAT {h['measured_ms']:.2f} ms loss {h['scratch_val_loss']:.3f} "
              f"BLEU {h['scratch_test_bleu']:.1f}"
              + (f" | homogeneous {b['measured_ms']:.2f} ms loss {b['scratch_val_loss']:.3f} BLEU "
                 f"{b['scratch_test_bleu']:.1f}" if b else " | no homogeneous SubTransformer fits"))
    figures["search"] = searches
    path = save(result_name(args.data), figures)
    print("\n| budget | HAT measured ms | HAT loss / BLEU (scratch) | homogeneous ms | homogeneous loss / BLEU |")
    for e in searches:
        h, b = e["hat"], e["homogeneous"]
        print(f"| p{e['percentile']} {e['budget_ms']:.2f} | {h['measured_ms']:.2f} | {h['scratch_val_loss']:.3f} / "
              f"{h['scratch_test_bleu']:.1f} | " + (f"{b['measured_ms']:.2f} | {b['scratch_val_loss']:.3f} / "
                                                   f"{b['scratch_test_bleu']:.1f} |" if b else "- | - |"))
    print("written", path)


if __name__ == "__main__":
    main()
