"""Benchmark search strategies on NAS-Bench-201, with and without a device-latency constraint.

Each run drives one strategy through ask/tell against the tabular arrays (no store, no training), so a
run of 300 queries takes well under a second for the light strategies. The rules:

* The *oracle* is the table's test accuracy (NB201's 200-epoch test accuracy of the chosen data set); it
  is what the strategy is told and what the regret is measured against.
* A *query* is one accuracy look-up of an architecture not seen before in the run. A strategy asking
  for an architecture it has already seen is told the stored result again, free; a run stops after
  ``budget`` queries (or after ``max_asks_factor * budget`` asks, whichever comes first).
* With a latency constraint (``device`` and ``latency_ms``), latency look-ups are free, as they are in
  practice with a lookup table or a predictor: the strategy gets the constraint as its cheap
  ``feasible`` predicate, and a candidate that still violates it is told back as infeasible without
  costing a query. The regret is measured against the *constrained* optimum (the best accuracy among
  architectures that meet the constraint).
* With ``objectives=("accuracy", "latency")`` the run reports the hypervolume of the Pareto front of
  every queried architecture (accuracy up, latency down) as a fraction of the true front's, computed
  from the full table, with the true front's nadir point as the reference (``hypervolume_ratio``). That
  reference includes the fastest, 10%-accurate cells, so the ratio is dominated by the easy part of the
  front; ``hypervolume_ratio_strict`` uses the table's median accuracy and median latency instead, which
  scores only the competitive region.

:func:`run_benchmark` runs strategies x seeds and returns a JSON-ready summary; :func:`format_table`
prints it; :func:`plot_curves` draws the anytime curves (best accuracy vs queries, mean and the 10-90%
band over seeds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgenas.benchmarks.nb201_table import DATASETS, NB201Table, load_nb201
from edgenas.errors import ConstraintUnsatisfiable, EdgenasError, unknown_name
from edgenas.search import STRATEGIES, TrialResult, make_strategy
from edgenas.search._blas import single_thread_blas
from edgenas.search.pareto import hypervolume_2d
from edgenas.spaces.nb201 import NB201Space, nb201_space

OBJECTIVE_SETS = {("accuracy",), ("accuracy", "latency")}
#: Strategy settings of the benchmark (everything else at its defaults): regularized evolution with a
#: population of 10, as in NAS-Bench-201's REA baseline, and a tournament of the whole population (chosen
#: among six settings on seeds 0-19 and confirmed on seeds 20-39; see docs/nb201.md).
NB201_OPTIONS: dict[str, dict[str, Any]] = {"evolution": {"population_size": 10, "sample_size": 10}}


@dataclass
class BenchSettings:
    """One benchmark configuration (see the module docstring)."""

    strategies: Sequence[str] = ("random", "evolution", "reinforce", "tpe", "nsga2")
    dataset: str = "cifar10"
    budget: int = 300
    seeds: int = 20
    first_seed: int = 0
    device: str | None = None
    latency_ms: float | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    checkpoints: tuple[int, ...] = (100,)
    max_asks_factor: int = 20
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(NB201_OPTIONS))

    def check(self, table: NB201Table) -> None:
        """Raise a one-line :class:`EdgenasError` for anything inconsistent."""
        for name in self.strategies:
            if name not in STRATEGIES:
                raise unknown_name("strategy", name, STRATEGIES)
        if not self.strategies:
            raise EdgenasError("no strategies given (e.g. --strategies random,evolution)")
        if self.dataset not in DATASETS:
            raise unknown_name("NB201 data set", self.dataset, DATASETS)
        if self.budget < 1 or self.seeds < 1:
            raise EdgenasError(f"budget and seeds must be at least 1 (got {self.budget}, {self.seeds})")
        if tuple(self.objectives) not in OBJECTIVE_SETS:
            raise EdgenasError(
                f"objectives must be 'accuracy' or 'accuracy,latency', got '{','.join(self.objectives)}'"
            )
        if self.device is not None:
            table.latency_of(self.device)  # unknown device: lists the valid ones
        if self.latency_ms is not None and self.device is None:
            raise EdgenasError("a latency constraint needs a device: add --device (e.g. --device raspi4)")
        if "latency" in self.objectives and self.device is None:
            raise EdgenasError("the latency objective needs a device: add --device (e.g. --device raspi4)")
        if self.latency_ms is not None and not (self.latency_ms > 0 and math.isfinite(self.latency_ms)):
            raise EdgenasError(
                f"the latency constraint must be a positive number of ms, got {self.latency_ms}"
            )


@dataclass
class RunTrace:
    """One strategy run: the best accuracy after each query and the architectures it queried."""

    strategy: str
    seed: int
    best: np.ndarray  # (budget,) best feasible accuracy after query i+1 (nan before the first)
    codes: np.ndarray  # codes of the queried architectures, in order
    asks: int
    seconds: float


def resolve_latency(table: NB201Table, device: str | None, spec: str | float | None) -> float | None:
    """A latency constraint given as ms or as ``median`` (the device's median latency over the table)."""
    if spec is None:
        return None
    if device is None:
        raise EdgenasError("a latency constraint needs a device: add --device (e.g. --device raspi4)")
    latency = table.latency_of(device)
    if isinstance(spec, str) and spec.strip().lower() == "median":
        return float(np.median(latency))
    try:
        return float(spec)
    except ValueError:
        raise EdgenasError(f"--latency-ms is a number of ms or 'median', got '{spec}'") from None


def _problem(table: NB201Table, settings: BenchSettings) -> dict[str, Any]:
    acc = table.accuracy_of(settings.dataset)
    lat = table.latency_of(settings.device) if settings.device else None
    feasible = np.ones(len(acc), dtype=bool)
    if settings.latency_ms is not None:
        assert lat is not None
        feasible = lat <= settings.latency_ms
        if not feasible.any():
            raise ConstraintUnsatisfiable(
                f"latency constraint {settings.latency_ms:g} ms on {settings.device} is below every "
                f"architecture's latency (fastest: {lat.min():.4g} ms, median {np.median(lat):.4g} ms)"
            )
    optimum = float(acc[feasible].max())
    return {"acc": acc, "lat": lat, "feasible": feasible, "optimum": optimum}


def run_once(
    space: NB201Space, problem: dict[str, Any], settings: BenchSettings, name: str, seed: int
) -> RunTrace:
    """One run of one strategy (see the module docstring for what counts as a query)."""
    acc, lat, feasible_arr = problem["acc"], problem["lat"], problem["feasible"]
    constrained = settings.latency_ms is not None
    directions = {"accuracy": "maximize", "latency": "minimize"}
    objectives = tuple((m, directions[m]) for m in settings.objectives)

    feasible_fn: Callable[[Any], bool] | None = None
    if constrained:
        def feasible_fn(arch: Any) -> bool:
            return bool(feasible_arr[space.code(arch)])

    options = dict(settings.strategy_options.get(name, {}))
    strategy = make_strategy(name, space, objectives=objectives, seed=seed, feasible=feasible_fn, **options)
    seen: dict[int, TrialResult] = {}
    best = np.full(settings.budget, np.nan)
    codes: list[int] = []
    current, asks = -math.inf, 0
    start = time.perf_counter()
    max_asks = settings.max_asks_factor * settings.budget
    while len(codes) < settings.budget and asks < max_asks and not strategy.exhausted:
        arch = strategy.ask()
        asks += 1
        code = space.code(arch)
        result = seen.get(code)
        if result is None:
            ok = bool(feasible_arr[code])
            metrics = {} if lat is None else {"latency": float(lat[code])}
            if ok:
                metrics["accuracy"] = float(acc[code])
                codes.append(code)
                current = max(current, metrics["accuracy"])
                best[len(codes) - 1] = current
            result = seen[code] = TrialResult(metrics, ok)
        strategy.tell(arch, result)
    if codes and len(codes) < settings.budget:  # stopped early: the best stays what it was
        best[len(codes):] = current
    return RunTrace(name, seed, best, np.array(codes, dtype=np.int64), asks, time.perf_counter() - start)


def true_front_hypervolume(
    acc: np.ndarray, lat: np.ndarray, reference: Sequence[float] | None = None
) -> tuple[float, list[float]]:
    """Hypervolume of the table's whole accuracy/latency front and the reference point used (by default
    the front's nadir: its lowest accuracy and highest latency)."""
    order = np.lexsort((-acc, lat))  # by latency, then best accuracy first
    running = np.maximum.accumulate(acc[order])
    keep = np.r_[True, running[1:] > running[:-1]]  # strictly better than everything faster
    front = np.stack([acc[order][keep], lat[order][keep]], axis=1)
    if reference is None:
        reference = [float(front[:, 0].min()), float(front[:, 1].max())]
    reference = [float(v) for v in reference]
    return hypervolume_2d(front, reference, ["maximize", "minimize"]), reference


def run_benchmark(
    settings: BenchSettings,
    bench_data: str,
    progress: Callable[[str, int, RunTrace], None] | None = None,
) -> dict[str, Any]:
    """Run every strategy for every seed and summarise (a JSON-ready dict; see :func:`format_table`)."""
    table = load_nb201(bench_data)
    settings.check(table)
    space = nb201_space()
    problem = _problem(table, settings)
    optimum = problem["optimum"]
    multi = "latency" in settings.objectives
    hv_true, reference, hv_strict, strict = 0.0, [], 0.0, []
    if multi:
        mask = problem["feasible"]
        acc, lat = problem["acc"][mask], problem["lat"][mask]
        hv_true, reference = true_front_hypervolume(acc, lat)
        strict = [float(np.median(acc)), float(np.median(lat))]
        hv_strict, _ = true_front_hypervolume(acc, lat, strict)
    results: dict[str, Any] = {}
    with single_thread_blas():  # strategies do many tiny solves: one BLAS thread is fastest
        for name in settings.strategies:
            traces = []
            for seed in range(settings.first_seed, settings.first_seed + settings.seeds):
                trace = run_once(space, problem, settings, name, seed)
                traces.append(trace)
                if progress is not None:
                    progress(name, seed, trace)
            results[name] = _summarise(traces, problem, settings, (hv_true, reference), (hv_strict, strict))
    return {
        "oracle": f"NAS-Bench-201 {settings.dataset} test accuracy (200 epochs), looked up from the table",
        "settings": {**asdict(settings), "strategies": list(settings.strategies)},
        "optimum": optimum,
        "optimum_kind": "constrained" if settings.latency_ms is not None else "unconstrained",
        "feasible_architectures": int(problem["feasible"].sum()),
        "true_front_hypervolume": hv_true if multi else None,
        "hypervolume_reference": reference if multi else None,
        "true_front_hypervolume_strict": hv_strict if multi else None,
        "hypervolume_reference_strict": strict if multi else None,
        "strategies": results,
    }


def _summarise(
    traces: list[RunTrace], problem: dict[str, Any], settings: BenchSettings,
    hv: tuple[float, list[float]], hv_strict: tuple[float, list[float]],
) -> dict[str, Any]:
    optimum = problem["optimum"]
    curves = np.stack([t.best for t in traces])  # (seeds, budget)
    final = curves[:, -1]
    regret = optimum - final
    out: dict[str, Any] = {
        "best_mean": float(np.nanmean(final)),
        "best_std": float(np.nanstd(final)),
        "regret_mean": float(np.nanmean(regret)),
        "regret_median": float(np.nanmedian(regret)),
        "found_optimum": float(np.mean(np.isclose(final, optimum, atol=1e-9))),
        "at": {},
        "queries_used_mean": float(np.mean([len(t.codes) for t in traces])),
        "asks_mean": float(np.mean([t.asks for t in traces])),
        "seconds_total": float(sum(t.seconds for t in traces)),
        "per_seed_best": final.tolist(),
        "curve_mean": np.nanmean(curves, axis=0).tolist(),
        "curve_p10": np.nanpercentile(curves, 10, axis=0).tolist(),
        "curve_p90": np.nanpercentile(curves, 90, axis=0).tolist(),
    }
    for q in settings.checkpoints:
        if 0 < q <= settings.budget:
            at = curves[:, q - 1]
            out["at"][str(q)] = {
                "best_mean": float(np.nanmean(at)),
                "best_std": float(np.nanstd(at)),
                "regret_median": float(np.nanmedian(optimum - at)),
            }
    if "latency" in settings.objectives:
        acc, lat = problem["acc"], problem["lat"]
        for suffix, (total, reference) in (("", hv), ("_strict", hv_strict)):
            ratios = []
            for t in traces:
                pts = np.stack([acc[t.codes], lat[t.codes]], axis=1)
                ratios.append(hypervolume_2d(pts, reference, ["maximize", "minimize"]) / total)
            out[f"hypervolume_ratio{suffix}_mean"] = float(np.mean(ratios))
            out[f"hypervolume_ratio{suffix}_std"] = float(np.std(ratios))
            out[f"per_seed_hypervolume_ratio{suffix}"] = ratios
    return out


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_benchmark` summary."""
    s = summary["settings"]
    head = (
        f"NB201 {s['dataset']}, {s['budget']} queries x {s['seeds']} seeds; oracle: {summary['oracle']}; "
        f"{summary['optimum_kind']} optimum {summary['optimum']:.2f}"
    )
    if s["latency_ms"] is not None:
        head += (f" (latency <= {s['latency_ms']:g} ms on {s['device']}, "
                 f"{summary['feasible_architectures']} feasible archs)")
    options = {n: o for n, o in s["strategy_options"].items() if n in s["strategies"] and o}
    if options:
        head += "; " + ", ".join(
            f"{n}({', '.join(f'{k}={v}' for k, v in o.items())})" for n, o in options.items()
        )
    multi = summary["true_front_hypervolume"] is not None
    if multi:
        ref, strict = summary["hypervolume_reference"], summary["hypervolume_reference_strict"]
        head += (f"\nhypervolume of accuracy vs {s['device']} latency; reference: the true front's nadir "
                 f"({ref[0]:.2f}%, {ref[1]:.4g} ms); strict: the table's medians ({strict[0]:.2f}%, "
                 f"{strict[1]:.4g} ms)")
    cols = ["strategy", "best (mean ± std)", "regret mean", "regret median", "found opt."]
    cols += [f"@{q} best" for q in s["checkpoints"] if q <= s["budget"]]
    if multi:
        cols += ["HV / true HV", "strict HV ratio"]
    cols.append("seconds")
    rows = []
    for name, r in summary["strategies"].items():
        row = [name, f"{r['best_mean']:.2f} ± {r['best_std']:.2f}", f"{r['regret_mean']:.3f}",
               f"{r['regret_median']:.3f}", f"{100 * r['found_optimum']:.0f}%"]
        row += [f"{r['at'][str(q)]['best_mean']:.2f}" for q in s["checkpoints"] if q <= s["budget"]]
        if multi:
            row += [f"{100 * r['hypervolume_ratio_mean']:.1f}%", f"{100 * r['hypervolume_ratio_strict_mean']:.1f}%"]
        row.append(f"{r['seconds_total']:.1f}")
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def plot_curves(summary: dict[str, Any], path: str, ax: Any = None) -> None:
    """Anytime curves (best accuracy vs queries: mean over seeds, 10-90% band) written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgenas.io import atomic_write_bytes

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4))
    _draw(summary, ax)
    if own:
        import io

        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())


#: One colour per strategy, the same in every plot.
STRATEGY_COLORS = {"random": "tab:gray", "evolution": "tab:orange", "reinforce": "tab:green", "tpe": "tab:purple",
                   "nsga2": "tab:brown", "bo": "tab:red", "grid": "tab:olive"}


def _draw(summary: dict[str, Any], ax: Any) -> None:
    s = summary["settings"]
    x = np.arange(1, s["budget"] + 1)
    for name, r in summary["strategies"].items():
        color = STRATEGY_COLORS.get(name)
        (line,) = ax.plot(x, r["curve_mean"], label=name, color=color)
        ax.fill_between(x, r["curve_p10"], r["curve_p90"], color=line.get_color(), alpha=0.15)
    ax.axhline(summary["optimum"], color="k", lw=0.8, ls="--", label=f"{summary['optimum_kind']} optimum")
    lo = min(np.nanmin(r["curve_p10"][min(9, s["budget"] - 1):]) for r in summary["strategies"].values())
    ax.set_ylim(max(lo, summary["optimum"] - 3.0) - 0.1, summary["optimum"] + 0.2)
    ax.set_xlabel("queries")
    ax.set_ylabel(f"best {s['dataset']} test accuracy (%)")
    title = f"NB201 {s['dataset']}"
    if s["latency_ms"] is not None:
        title += f", latency <= {s['latency_ms']:g} ms on {s['device']}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
