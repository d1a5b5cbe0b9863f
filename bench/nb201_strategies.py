"""Search strategies on NAS-Bench-201 (CIFAR-10), against the targets of the NB201 issue.

    EDGENAS_DATA=../shared/data python bench/nb201_strategies.py [--seeds 20] [--budget 300]
        [--sections default,constrained,multi]

* default: random, evolution, reinforce, tpe, nsga2 (and bo, timed apart), unconstrained. Targets:
  evolution mean best >= 94.33 after 300 queries and >= 94.20 after 100; reinforce better than random
  at 300; the five strategies together in <= 10 minutes.
* constrained: latency <= each device's median latency, for every device column; latency look-ups are
  free and infeasible candidates cost no query. Target: the best strategy's median regret to the
  constrained optimum <= 0.10 points on every device.
* multi: accuracy vs raspi4 latency; target: hypervolume >= 95% of the true front's for NSGA-II or
  evolution.

The oracle is the table's test accuracy (200 epochs). Writes ``bench/results/nb201_strategies.json`` and
``bench/results/nb201_strategies.png`` (anytime curves).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save  # noqa: E402

from edgenas.benchmarks.nb201 import BenchSettings, format_table, resolve_latency, run_benchmark  # noqa: E402
from edgenas.benchmarks.nb201_table import load_nb201  # noqa: E402

DEFAULT = ["random", "evolution", "reinforce", "tpe", "nsga2"]
CONSTRAINED = ["random", "evolution", "reinforce", "bo"]
MULTI = ["random", "evolution", "nsga2"]


def slim(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without per-query curves of every strategy (kept: the mean curve)."""
    out = {k: v for k, v in summary.items() if k != "strategies"}
    out["strategies"] = {
        name: {k: v for k, v in r.items() if k not in ("curve_p10", "curve_p90")}
        for name, r in summary["strategies"].items()
    }
    return out


def run_default(data: str, seeds: int, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
    start = time.perf_counter()
    main = run_benchmark(BenchSettings(strategies=DEFAULT, seeds=seeds, budget=budget), data)
    wall = time.perf_counter() - start
    extra = run_benchmark(BenchSettings(strategies=["bo"], seeds=seeds, budget=budget), data)
    main["strategies"].update(extra["strategies"])
    print(format_table(main))
    r = main["strategies"]
    at100 = r["evolution"]["at"].get("100", {}).get("best_mean", float("nan"))
    checks = {
        "evolution_mean_at_300": [r["evolution"]["best_mean"], ">=", 94.33],
        "evolution_mean_at_100": [at100, ">=", 94.20],
        "reinforce_minus_random_at_300": [r["reinforce"]["best_mean"] - r["random"]["best_mean"], ">", 0.0],
        "five_strategies_wall_seconds": [wall, "<=", 600.0],
    }
    print(f"default benchmark: {wall:.0f} s for {', '.join(DEFAULT)}; bo alone "
          f"{r['bo']['seconds_total']:.0f} s")
    return main, {"wall_seconds_five_strategies": wall, "checks": checks}


def run_constrained(data: str, seeds: int, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
    table = load_nb201(data)
    per_device: dict[str, Any] = {}
    summaries: dict[str, Any] = {}
    for device in table.devices:
        limit = resolve_latency(table, device, "median")
        summary = run_benchmark(BenchSettings(strategies=CONSTRAINED, seeds=seeds, budget=budget, device=device,
                                              latency_ms=limit), data)
        print(format_table(summary))
        summaries[device] = summary
        per_device[device] = {
            "latency_ms": limit,
            "optimum": summary["optimum"],
            "median_regret": {n: r["regret_median"] for n, r in summary["strategies"].items()},
            "found_optimum": {n: r["found_optimum"] for n, r in summary["strategies"].items()},
        }
    best = {d: min(v["median_regret"].items(), key=lambda kv: kv[1]) for d, v in per_device.items()}
    worst_of_best = max(regret for _, regret in best.values())
    print("constrained (latency <= device median), median regret per strategy:")
    print(f"{'device':<13}" + "".join(f"{n:>11}" for n in CONSTRAINED))
    for device, v in per_device.items():
        print(f"{device:<13}" + "".join(f"{v['median_regret'][n]:>11.3f}" for n in CONSTRAINED))
    checks = {"best_strategy_median_regret_worst_device": [worst_of_best, "<=", 0.10]}
    per_strategy_worst = {n: max(v["median_regret"][n] for v in per_device.values()) for n in CONSTRAINED}
    return summaries, {"per_device": per_device, "best_per_device": best,
                       "worst_device_median_regret": per_strategy_worst, "checks": checks}


def run_multi(data: str, seeds: int, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = run_benchmark(BenchSettings(strategies=MULTI, seeds=seeds, budget=budget, device="raspi4",
                                          objectives=("accuracy", "latency")), data)
    print(format_table(summary))
    r = summary["strategies"]
    best = max(r["nsga2"]["hypervolume_ratio_mean"], r["evolution"]["hypervolume_ratio_mean"])
    return summary, {"checks": {"best_of_nsga2_evolution_hypervolume_ratio": [best, ">=", 0.95]}}


def plot(results: dict[str, Any], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgenas.benchmarks.nb201 import plot_curves
    from edgenas.io import atomic_write_bytes

    panels = [("default", results.get("default"))]
    constrained = results.get("constrained") or {}
    panels += [(f"constrained {d}", constrained[d]) for d in ("raspi4", "fpga") if d in constrained]
    panels = [(t, s) for t, s in panels if s]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (_, summary) in zip(axes[0], panels, strict=True):
        plot_curves(summary, "", ax=ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--sections", default="default,constrained,multi")
    parser.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"))
    args = parser.parse_args()
    if not args.bench_data:
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA")
    runners = {"default": run_default, "constrained": run_constrained, "multi": run_multi}
    full: dict[str, Any] = {}
    figures: dict[str, Any] = {"oracle": "NAS-Bench-201 CIFAR-10 test accuracy (200 epochs), from the table",
                               "seeds": args.seeds, "budget": args.budget}
    for section in args.sections.split(","):
        summary, extra = runners[section](args.bench_data, args.seeds, args.budget)
        full[section] = summary
        figures[section] = {"figures": extra,
                            "summary": ({d: slim(s) for d, s in summary.items()} if section == "constrained"
                                        else slim(summary))}
    checks = {f"{sec}.{k}": v for sec in full for k, v in figures[sec]["figures"]["checks"].items()}
    print("\ntargets:")
    for name, (value, op, target) in checks.items():
        ok = {">=": value >= target, "<=": value <= target, ">": value > target}[op]
        print(f"  {name:<55} {value:10.4f} {op} {target:<8} {'met' if ok else 'MISSED'}")
    figures["targets"] = {k: {"value": v, "op": op, "target": t} for k, (v, op, t) in checks.items()}
    path = save("nb201_strategies", figures)
    plot(full, RESULTS / "nb201_strategies.png")
    print(f"wrote {path} and {RESULTS / 'nb201_strategies.png'}")


if __name__ == "__main__":
    main()
