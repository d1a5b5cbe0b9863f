"""Zero-shot proxies on NAS-Bench-201: rank correlation with CIFAR-10 accuracy, variance, time per proxy.

Scores a seeded random sample of NB201 architectures (default 1,000) with every proxy on one CIFAR-10 batch
of 64 from the reference images, and compares Spearman's |rho| with the published figures (Abdelfattah et
al., ICLR 2021; Mellor et al., ICML 2021). The variance part re-scores the first ``--variance-archs`` of
the same architectures with other seeds (another batch and another initialisation per seed), so the
spread is the proxies' own, not the sample's. Single-threaded (``torch.set_num_threads(1)``); each
study checkpoints under ``--work`` and resumes when run again.

    EDGENAS_DATA=../shared/data python bench/proxies_nb201.py            # full run (hours on one core)
    python bench/proxies_nb201.py --bench-data ../shared/data --archs 20 --variance-archs 10   # quick

Writes ``bench/results/proxies_nb201.json``.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgenas.estimators.proxies import DEFAULT_MEMBERS, PROXIES, mean_rank_vote  # noqa: E402
from edgenas.estimators.proxies.study import (  # noqa: E402
    PUBLISHED_NB201,
    StudyResult,
    StudySettings,
    correlation,
    run_study,
)
from edgenas.io import atomic_write_json, machine_info  # noqa: E402

#: The vote Abdelfattah et al. publish (0.82 on all of NB201).
PUBLISHED_VOTE = ("synflow", "jacob_cov", "snip")
TOLERANCE = 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"), help="reference-data folder")
    ap.add_argument("--archs", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2", help="the first is the main study; the others the variance")
    ap.add_argument("--variance-archs", type=int, default=200)
    ap.add_argument("--main-minutes", type=float, default=None,
                    help="stop the main study after this long and report the architectures scored so far")
    ap.add_argument("--variance-minutes", type=float, default=None, help="the same, per variance seed")
    ap.add_argument("--shard", default=None, help="K/N: score only archs with index K mod N (run N processes, "
                    "then once without --shard for the figures)")
    ap.add_argument("--timing-archs", type=int, default=20,
                    help="after the study, time all proxies on this many archs again, alone (0: skip); the "
                         "study's own times include whatever else ran on the machine")
    ap.add_argument("--time-every", type=int, default=20, help="score every k-th arch proxy by proxy too")
    ap.add_argument("--replicate-archs", type=int, default=3000,
                    help="a second, independent sample (seed of the second --seeds entry: other archs, batch and "
                         "initialisation) scored with --replicate-proxies only, for the published-rho comparison "
                         "(0: skip; about 1.2 s/arch)")
    ap.add_argument("--replicate-proxies", default="grad_norm,snip")
    ap.add_argument("--grasp-frozen", action=argparse.BooleanOptionalAction, default=True,
                    help="also score GraSP with the frozen-pattern forward difference on the main sample and compare "
                         "it with the exact scores (about 2 s/arch; checkpointed under --work)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "proxies_nb201"), help="checkpoints")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "proxies_nb201.json"))
    ap.add_argument("--only", default=None,
                    help="comma-separated parts to measure again (timing, replicate) on top of the figures already in "
                         "--out; the rest of the report is kept and the new figures are stored with this machine")
    args = ap.parse_args()
    if not args.bench_data or not Path(args.bench_data, "cifar10").is_dir():
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA (e.g. ../shared/data)")
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = f"npz:{Path(args.bench_data, 'cifar10')}"
    names = tuple(PROXIES)

    def progress(tag: str):
        t0 = time.time()

        def report(done: int, total: int, key: str) -> None:
            if done % 10 == 0 or done == total:
                rate = (time.time() - t0) / max(done, 1)
                print(f"[{tag}] {done}/{total} archs, {rate:.1f} s/arch since start", flush=True)

        return report

    main_settings = StudySettings(space="nb201", data=data, archs=args.archs, batch=args.batch, seed=seeds[0],
                                  proxies=names, ensemble=DEFAULT_MEMBERS, time_every=args.time_every)
    if args.only:
        update_parts(args, main_settings, seeds, data, progress)
        return
    shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
    main_result = run_study(main_settings, Path(args.work, f"seed{seeds[0]}"), args.bench_data,
                            progress(f"seed {seeds[0]}"), time_limit=_seconds(args.main_minutes), shard=shard)
    variance: dict[int, StudyResult] = {}
    n_var = min(args.variance_archs, args.archs)
    for s in seeds[1:]:
        settings = StudySettings(space="nb201", data=data, archs=n_var, batch=args.batch, seed=s,
                                 arch_seed=seeds[0], proxies=names, ensemble=DEFAULT_MEMBERS, time_every=0)
        variance[s] = run_study(settings, Path(args.work, f"seed{s}_first{n_var}"), args.bench_data,
                                progress(f"seed {s}"), time_limit=_seconds(args.variance_minutes), shard=shard)
    if shard is not None:
        print(f"shard {args.shard} done; run again without --shard for the figures")
        return
    # a time limit may leave fewer architectures than asked: compare the seeds on the ones all of them scored
    n_var = min([n_var, len(main_result.records), *(len(r.records) for r in variance.values())])

    report = summarise(main_result, variance, n_var)
    if args.replicate_archs > 0:
        report["replicate"] = run_replicate(args, seeds, data, progress)
    if args.grasp_frozen:
        frozen_settings = StudySettings(space="nb201", data=data, archs=args.archs, batch=args.batch, seed=seeds[0],
                                        proxies=("grasp",), time_every=0, grasp_hvp="frozen")
        frozen = run_study(frozen_settings, Path(args.work, f"seed{seeds[0]}_grasp_frozen"), args.bench_data,
                           progress("grasp frozen"), time_limit=_seconds(args.main_minutes))
        report["grasp_frozen"] = compare_grasp(main_result, frozen)
    if args.timing_archs > 0:
        report["timing_alone"] = time_alone(main_settings, args.bench_data, args.timing_archs)
    report.update(
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        machine=machine_info(),
        threads=torch.get_num_threads(),
        settings=main_settings.to_json(),
        note="CIFAR-10 images are the reference copy of the CIFAR-10 test split (the batch is drawn from its "
             "80% 'train' part); accuracies are NB201's CIFAR-10 test accuracy after 200 epochs.",
    )
    atomic_write_json(args.out, report)
    scatter_grid(main_result, Path(args.out).with_name("proxies_nb201_scatter.png"))
    print_table(report)
    print(f"wrote {args.out}")


def run_replicate(args: argparse.Namespace, seeds: list[int], data: str, progress) -> dict:  # noqa: ANN001
    """A second, independent sample scored with the replicate proxies: rho on all of it and on each of its
    consecutive blocks of ``--archs`` architectures (independent samples of the main study's size, which show
    how far one such sample's rho strays from the population's)."""
    rep_seed = seeds[1] if len(seeds) > 1 else seeds[0] + 1
    rep_settings = StudySettings(space="nb201", data=data, archs=args.replicate_archs, batch=args.batch,
                                 seed=rep_seed, proxies=tuple(args.replicate_proxies.split(",")), time_every=0)
    replicate = run_study(rep_settings, Path(args.work, f"seed{rep_seed}_replicate_n{args.replicate_archs}"),
                          args.bench_data, progress(f"replicate seed {rep_seed}"),
                          time_limit=_seconds(args.main_minutes))
    acc = replicate.accuracies
    blocks = [(i, min(i + args.archs, len(acc))) for i in range(0, len(acc) - args.archs + 1, args.archs)]
    out = {"seed": rep_seed, "archs": len(replicate.records), "block_archs": args.archs, "proxies": {}}
    for name in rep_settings.proxies:
        scores = replicate.scores(name)
        per_block = [correlation(scores[a:b], acc[a:b])["spearman"] for a, b in blocks]
        out["proxies"][name] = {
            "spearman": replicate.figures[name]["spearman"], "kendall": replicate.figures[name]["kendall"],
            "published_abs_spearman": PUBLISHED_NB201.get(name),
            "within_0.05": _within(replicate.figures[name]["spearman"], PUBLISHED_NB201.get(name)),
            "spearman_per_block": per_block,
            "blocks_within_0.05": [_within(r, PUBLISHED_NB201.get(name)) for r in per_block]}
    print(f"replicate (seed {rep_seed}, {len(replicate.records)} archs): " + ", ".join(
        f"{n} rho {r['spearman']:.3f} (blocks of {args.archs}: "
        + ", ".join(f"{v:.3f}" for v in r["spearman_per_block"]) + f"; published {r['published_abs_spearman']})"
        for n, r in out["proxies"].items()), flush=True)
    return out


def update_parts(args: argparse.Namespace, main_settings: StudySettings, seeds: list[int], data: str,
                 progress) -> None:  # noqa: ANN001
    """``--only``: measure some parts again and merge them into the existing report. Parts measured on
    another machine than the report's are kept beside it under ``remeasured`` (machine, command, figures),
    never overwriting the original run's."""
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"timing", "replicate"})
    if unknown:
        sys.exit(f"--only: unknown part(s) {', '.join(unknown)}; choose from timing, replicate")
    path = Path(args.out)
    if not path.is_file():
        sys.exit(f"--only updates an existing report, and {path} does not exist: run the full bench first")
    report = json.loads(path.read_text())
    figures: dict = {}
    if "replicate" in parts:
        figures["replicate"] = run_replicate(args, seeds, data, progress)
    if "timing" in parts:
        figures["timing_alone"] = time_alone(main_settings, args.bench_data, args.timing_archs)
    entry = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
             "date": time.strftime("%Y-%m-%d"), **figures}
    report.setdefault("remeasured", []).append(entry)
    atomic_write_json(path, report)
    print(f"updated {path} (remeasured: {', '.join(parts)})")


def _within(rho: float, published: float | None) -> bool | None:
    return None if published is None else bool(abs(abs(rho) - published) <= TOLERANCE)


def compare_grasp(exact: StudyResult, frozen: StudyResult) -> dict:
    """GraSP by the frozen-pattern forward difference against the exact (double-backward) scores of the same
    architectures, batch and initialisation."""
    by_index = {r.index: r for r in frozen.records}
    pairs = [(r.scores["grasp"], by_index[r.index].scores["grasp"], r.accuracy) for r in exact.records
             if r.index in by_index]
    e, f, acc = (np.array(v, dtype=np.float64) for v in zip(*pairs, strict=True))
    rel = np.abs(f - e) / np.maximum(np.abs(e), 1e-12)
    out = {
        "archs": len(pairs),
        "spearman_frozen_vs_exact": correlation(f, e)["spearman"],
        "relative_error": {"median": float(np.median(rel)), "p90": float(np.percentile(rel, 90)),
                           "max": float(rel.max())},
        "share_within_5pct": float(np.mean(rel <= 0.05)),
        "sign_flips": int(np.sum(np.sign(f) != np.sign(e))),
        "spearman_with_accuracy": {"exact": correlation(e, acc)["spearman"], "frozen": correlation(f, acc)["spearman"]},
    }
    print(f"GraSP frozen vs exact on {out['archs']} archs: rho {out['spearman_frozen_vs_exact']:.3f}, median rel. "
          f"error {out['relative_error']['median']:.3f}, {100 * out['share_within_5pct']:.0f} % within 5 %, "
          f"{out['sign_flips']} sign flips; rho with accuracy exact {out['spearman_with_accuracy']['exact']:.3f}, "
          f"frozen {out['spearman_with_accuracy']['frozen']:.3f}", flush=True)
    return out


def time_alone(settings: StudySettings, bench_data: str, n: int) -> dict:
    """Seconds per arch of all proxies (the study's shared pass plus the rest) and of each proxy alone, on
    the first ``n`` archs of the study's sample (after one untimed warm-up arch), measured now in this
    process, one thread; ``shared_frozen``
    and ``all_as_run_frozen`` are the same with GraSP's frozen-pattern forward difference."""
    from edgenas.estimators.proxies.shared import SHARED, shared_scores
    from edgenas.estimators.proxies.study import sample_archs, score_arch
    from edgenas.evaluators import EvalContext
    from edgenas.spaces import get_space

    space = get_space(settings.space)
    data = EvalContext(space=space, data_spec=settings.data, seed=settings.seed, bench_data=bench_data).data
    per: dict[str, list[float]] = {}
    archs = sample_archs(space, n + 1, settings.seed)
    # one untimed arch first: the first call of each proxy pays one-off costs (imports, PyTorch's flop-counter
    # and dispatcher set-up: ~2 s for 'flops' alone) that a study of many archs pays once, not per arch
    score_arch(space, archs[-1], data, settings.proxies, settings.batch, settings.seed, share=True)
    shared_scores(space.build(archs[-1], data.num_classes, data.in_channels, settings.seed),
                  data.batch(settings.batch, settings.seed, resolution=space.resolution(archs[-1])), settings.seed,
                  [n for n in settings.proxies if n in SHARED], hvp="frozen")
    for arch in archs[:n]:
        _, seconds = score_arch(space, arch, data, settings.proxies, settings.batch, settings.seed,
                                share=True, standalone_times=True)
        rest = sum(v for k, v in seconds.items() if k in settings.proxies and k not in SHARED)
        seconds["all_as_run"] = seconds["shared"] + rest
        model = space.build(arch, data.num_classes, data.in_channels, settings.seed)
        batch = data.batch(settings.batch, settings.seed, resolution=space.resolution(arch))
        t0 = time.perf_counter()
        shared_scores(model, batch, settings.seed, [n for n in settings.proxies if n in SHARED], hvp="frozen")
        seconds["shared_frozen"] = time.perf_counter() - t0
        seconds["all_as_run_frozen"] = seconds["shared_frozen"] + rest
        for k, v in seconds.items():
            per.setdefault(k, []).append(v)
    out = {k: float(np.mean(v)) for k, v in per.items()}
    out.update(archs=n, loadavg=os.getloadavg()[0], target_seconds=5.0)
    print(f"alone, {n} archs: all proxies {out['all_as_run']:.2f} s/arch (shared pass {out['shared']:.2f} s), "
          f"{out['all_as_run_frozen']:.2f} s with GraSP frozen (shared pass {out['shared_frozen']:.2f} s); "
          + ", ".join(f"{k} {out[k]:.2f}" for k in settings.proxies), flush=True)
    return out


def _seconds(minutes: float | None) -> float | None:
    return None if minutes is None else 60 * minutes


def _votes(result: StudyResult) -> dict[str, np.ndarray]:
    table = {n: result.scores(n) for n in result.settings.proxies}
    return {
        "ensemble": mean_rank_vote(table, DEFAULT_MEMBERS),
        "vote_synflow_jacob_cov_snip": mean_rank_vote(table, PUBLISHED_VOTE),
    }


def summarise(main: StudyResult, variance: dict[int, StudyResult], n_var: int) -> dict:
    acc = main.accuracies
    rows: dict[str, dict] = {}
    series = {n: main.scores(n) for n in main.settings.proxies} | _votes(main)
    sub_series = [{n: v[:n_var] for n, v in series.items()}]
    sub_acc = [acc[:n_var]]
    for res in variance.values():
        sub_series.append({n: v[:n_var] for n, v in ({n: res.scores(n) for n in res.settings.proxies}
                                                     | _votes(res)).items()})
        sub_acc.append(res.accuracies[:n_var])
    for name, values in series.items():
        fig = correlation(values, acc)
        row = {
            "spearman": fig["spearman"], "abs_spearman": abs(fig["spearman"]), "kendall": fig["kendall"],
            "nonfinite": fig["nonfinite"],
            "seconds_per_arch": main.figures.get(name, {}).get("seconds_per_arch"),
        }
        if name in PUBLISHED_NB201:
            row["published_abs_spearman"] = PUBLISHED_NB201[name]
            row["within_0.05"] = bool(abs(abs(fig["spearman"]) - PUBLISHED_NB201[name]) <= TOLERANCE)
        if variance:
            rhos = [correlation(s[name], a)["spearman"] for s, a in zip(sub_series, sub_acc, strict=True)]
            row["variance"] = {"archs": n_var, "seeds": [main.settings.seed, *variance], "spearman": rhos,
                               "mean": float(np.mean(rhos)), "std": float(np.std(rhos, ddof=1))}
        rows[name] = row
    rows["ensemble"]["members"] = list(DEFAULT_MEMBERS)
    rows["ensemble"]["target"] = 0.85
    rows["vote_synflow_jacob_cov_snip"]["members"] = list(PUBLISHED_VOTE)
    rows["vote_synflow_jacob_cov_snip"]["published_abs_spearman"] = 0.82
    timing = main.figures.get("_timing", {})
    return {"archs": len(main.records), "archs_asked": main.settings.archs, "proxies": rows, "timing": timing,
            "ensemble_selection": select_ensemble(main),
            "accuracy_range": [float(np.nanmin(acc)), float(np.nanmax(acc))]}


def select_ensemble(result: StudyResult, max_members: int = 4) -> dict:
    """Which vote would one pick from data? Every combination of 2..max_members proxies is ranked by its rho
    on the first half of the sample and the best is reported on the second half (a held-out estimate, unlike
    a combination picked on all the archs it is scored on)."""
    from itertools import combinations

    acc = result.accuracies
    table = {n: result.scores(n) for n in result.settings.proxies}
    half = len(acc) // 2
    scored = []
    for k in range(2, max_members + 1):
        for combo in combinations(table, k):
            vote = mean_rank_vote(table, combo)
            scored.append((correlation(vote[:half], acc[:half])["spearman"], combo, vote))
    scored.sort(key=lambda t: -t[0])
    top = []
    for rho_first, combo, vote in scored[:5]:
        top.append({"members": list(combo), "spearman_first_half": rho_first,
                    "spearman_second_half": correlation(vote[half:], acc[half:])["spearman"],
                    "spearman_all": correlation(vote, acc)["spearman"]})
    return {"split": [half, len(acc) - half], "max_members": max_members, "top5_by_first_half": top}


def scatter_grid(result: StudyResult, path: Path) -> None:
    """Every proxy's rank against accuracy in one figure (ranks: the scores span dozens of decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgenas.estimators.proxies import ranks

    series = {n: result.scores(n) for n in result.settings.proxies} | {"ensemble": _votes(result)["ensemble"]}
    cols = 4
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), dpi=80, squeeze=False)
    acc = result.accuracies
    for ax, (name, values) in zip(axes.flat, series.items(), strict=False):
        ax.scatter(ranks(values), acc, s=3, alpha=0.4, linewidths=0)
        fig_rho = correlation(values, acc)["spearman"]
        ax.set_title(f"{name} (rho {fig_rho:.2f})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.supxlabel("proxy rank (NaN/inf tied last)", fontsize=9)
    fig.supylabel("NB201 CIFAR-10 accuracy (%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_table(report: dict) -> None:
    print(f"\nNB201 CIFAR-10, {report['archs']} archs, batch {report['settings']['batch']}, one thread")
    print(f"{'proxy':30s} {'rho':>7s} {'tau':>7s} {'pub|rho|':>8s} {'rho mean+-std (3 seeds)':>24s} "
          f"{'nonfin':>6s} {'s/arch':>7s}")
    for name, r in report["proxies"].items():
        pub = r.get("published_abs_spearman")
        var = r.get("variance")
        var_s = f"{var['mean']:.3f} +- {var['std']:.3f}" if var else "-"
        secs = r.get("seconds_per_arch")
        print(f"{name:30s} {r['spearman']:7.3f} {r['kendall']:7.3f} {pub if pub else '-':>8} {var_s:>24s} "
              f"{r['nonfinite']:6d} {secs if secs is None else round(secs, 2)!s:>7s}")
    best = report["ensemble_selection"]["top5_by_first_half"][0]
    print(f"vote picked on the first half: {'+'.join(best['members'])}: rho {best['spearman_first_half']:.3f} "
          f"(first half), {best['spearman_second_half']:.3f} (held-out second half)")
    t = report["timing"]
    print(f"all proxies of one arch: {t.get('all_proxies_as_run_mean', float('nan')):.2f} s as run (shared "
          f"pass), "
          f"{t.get('all_proxies_standalone_sum_of_means', float('nan')):.2f} s proxy by proxy")


if __name__ == "__main__":
    main()
