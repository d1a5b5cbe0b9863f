"""Plots and an HTML report of a finished (or running) search.

``pareto.png``: accuracy against latency (or the first two objectives), every feasible trial, the
infeasible ones crossed out, the Pareto front highlighted and the constraint drawn as a line.
``progress.png``: best accuracy found so far against the number of evaluations.
``report.html``: the settings, the best trial, the Pareto front as a table and both plots, self-contained.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgenas.errors import EdgenasError  # noqa: E402
from edgenas.experiment import ExperimentConfig  # noqa: E402
from edgenas.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from edgenas.store import TrialRecord, TrialStore, best_record, pareto_records  # noqa: E402

LABELS = {"accuracy": "accuracy (%)", "latency": "latency (ms)", "params": "parameters", "flops": "MACs"}


def _label(metric: str, config: ExperimentConfig) -> str:
    from edgenas.evaluators import accuracy_label

    return accuracy_label(config.estimator) if metric == "accuracy" else LABELS.get(metric, metric)


def _axes(config: ExperimentConfig) -> tuple[str, str]:
    """(x metric, y metric) for the Pareto plot: a cost on x, accuracy on y where possible."""
    objs = list(config.objectives)
    y = "accuracy" if "accuracy" in objs else objs[0]
    costs = [o for o in objs if o != y] + [m for m in ("latency", "flops", "params") if m not in objs]
    return costs[0], y


def _save(fig: plt.Figure, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_pareto(records: list[TrialRecord], config: ExperimentConfig, path: Path) -> None:
    x, y = _axes(config)
    objectives = [(x, "minimize"), (y, "maximize" if y == "accuracy" else "minimize")]
    have = [r for r in records if x in r.metrics]
    feas = [r for r in have if r.feasible and y in r.metrics]
    infeas = [r for r in have if not r.feasible]
    front = pareto_records(feas, objectives)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter([r.metrics[x] for r in feas], [r.metrics[y] for r in feas], s=22, c="#9aa5b1",
               label="evaluated")
    if infeas:
        ys = [r.metrics.get(y, math.nan) for r in infeas]
        base = min([r.metrics[y] for r in feas], default=0.0)
        ax.scatter([r.metrics[x] for r in infeas], [v if math.isfinite(v) else base for v in ys], marker="x",
                   s=22, c="#d64545", label="infeasible (not trained)")
    if front:
        ax.plot([r.metrics[x] for r in front], [r.metrics[y] for r in front], "-o", c="#1f6feb", ms=6,
                label="Pareto front")
    if x in config.constraints:
        ax.axvline(config.constraints[x], ls="--", c="#d64545", lw=1.2, label=f"{x} budget")
    best = best_record(records, y, "maximize" if y == "accuracy" else "minimize")
    if best and x in best.metrics:
        ax.scatter([best.metrics[x]], [best.metrics[y]], marker="*", s=180, c="#f5a623", zorder=5,
                   label=f"best (trial {best.number})")
    ax.set_xlabel(_label(x, config))
    ax.set_ylabel(_label(y, config))
    ax.set_title(f"{config.space} on {config.data}: {config.strategy}, target {config.target}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_progress(records: list[TrialRecord], config: ExperimentConfig, path: Path) -> None:
    metric = config.objectives[0]
    sign = 1.0 if metric == "accuracy" else -1.0
    xs, ys, best = [], [], -math.inf
    for i, r in enumerate(records, 1):
        if r.feasible and metric in r.metrics:
            best = max(best, sign * r.metrics[metric])
        if math.isfinite(best):
            xs.append(i)
            ys.append(sign * best)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.step(xs, ys, where="post", c="#1f6feb")
    ax.set_xlabel("trials (including infeasible)")
    ax.set_ylabel(f"best {_label(metric, config)}")
    ax.set_title("search progress")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _img(path: Path) -> str:
    return f'<img alt="{path.name}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def write_report(out: str | Path) -> Path:
    """Write ``report.html``, ``pareto.png`` and ``progress.png`` into a search's folder; returns the HTML path."""
    out = Path(out)
    config = ExperimentConfig.load(out)
    if not (out / "study.db").exists():
        raise EdgenasError(f"'{out}' has no study.db; the search stored no trials yet")
    records = TrialStore.open(out).records()
    if not records:
        raise EdgenasError(f"'{out}' has no finished trials yet")
    plot_pareto(records, config, out / "pareto.png")
    plot_progress(records, config, out / "progress.png")
    objectives = [(m, "maximize" if m == "accuracy" else "minimize") for m in config.objectives]
    front = pareto_records(records, objectives)
    best = best_record(records, *objectives[0])
    metrics = sorted({k for r in records for k in r.metrics})
    rows = "".join(
        "<tr>" + f"<td>{r.number}</td>" + "".join(f"<td>{r.metrics.get(m, float('nan')):.4g}</td>" for m in metrics)
        + f"<td><code>{html.escape(json.dumps(r.arch))}</code></td></tr>"
        for r in front
    )
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in config.to_json().items())
    best_html = "<p>No feasible trial.</p>"
    if best:
        values = ", ".join(f"{k} {v:.4g}" for k, v in best.metrics.items())
        arch_json = html.escape(json.dumps(best.arch, indent=1))
        best_html = f"<p>Best: trial {best.number}, {values}</p><pre>{arch_json}</pre>"
    header = "".join(f"<th>{m}</th>" for m in metrics)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>edgenas report: {html.escape(str(out))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1f24}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #d0d7de;padding:3px 7px;text-align:left}}
code{{font-size:11px;word-break:break-all}}img{{max-width:100%}}</style></head><body>
<h1>edgenas search report</h1>
<p>{len(records)} trials, {sum(r.feasible for r in records)} feasible, Pareto front of {len(front)}.</p>
<h2>Best</h2>{best_html}
<h2>Accuracy vs cost</h2>{_img(out / "pareto.png")}
<h2>Progress</h2>{_img(out / "progress.png")}
<h2>Pareto front</h2><table><tr><th>trial</th>{header}<th>arch</th></tr>{rows}</table>
<h2>Settings</h2><table>{settings}</table>
</body></html>"""
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
