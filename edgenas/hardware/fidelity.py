"""How faithful is a latency model? Error and rank metrics, drift detection and plots.

Metrics (of predictions against held-out measurements): RMSE (ms), MAPE (%), the share of predictions
within ±5 % and ±10 % of the measurement (nn-Meter's headline figure, Zhang et al., MobiSys 2021),
Spearman's ρ and Kendall's τ (what a search needs: the right order). Plots: predicted against measured
with the ±10 % band, and the relative residual against *measurement order*, with a running median,
which makes drift (runs of consecutive measurements that are slow or fast together) visible; a model
cannot predict drift from the architecture, so it shows as blocks of large same-sign residuals.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np


def fidelity(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """RMSE (ms), MAPE (%), % within ±5 / ±10 %, Spearman ρ, Kendall τ and the count."""
    from scipy.stats import kendalltau, spearmanr

    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    rel = p / m - 1.0
    return {
        "n": int(len(m)),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "mape_pct": float(np.mean(np.abs(rel)) * 100),
        "within_5_pct": float(np.mean(np.abs(rel) <= 0.05) * 100),
        "within_10_pct": float(np.mean(np.abs(rel) <= 0.10) * 100),
        "spearman": float(spearmanr(p, m).statistic) if len(m) > 2 else float("nan"),
        "kendall": float(kendalltau(p, m).statistic) if len(m) > 2 else float("nan"),
    }


def running_median(x: np.ndarray, window: int = 9) -> np.ndarray:
    """Centred running median (the window shrinks at the ends)."""
    x = np.asarray(x, dtype=np.float64)
    h = window // 2
    return np.array([np.median(x[max(0, i - h) : i + h + 1]) for i in range(len(x))])


def drift_mask(predicted: Sequence[float], measured: Sequence[float], threshold: float = 0.15,
               min_run: int = 2) -> np.ndarray:
    """Rows that belong to runs of at least ``min_run`` consecutive measurements all more than
    ``threshold`` slower (or faster) than predicted: drift, not the architecture, explains them."""
    rel = np.asarray(measured, dtype=np.float64) / np.asarray(predicted, dtype=np.float64) - 1.0
    out = np.zeros(len(rel), dtype=bool)
    for sign in (1.0, -1.0):
        flag = sign * rel > threshold
        i = 0
        while i < len(flag):
            if flag[i]:
                j = i
                while j < len(flag) and flag[j]:
                    j += 1
                if j - i >= min_run:
                    out[i:j] = True
                i = j
            else:
                i += 1
    return out


def fidelity_report(predicted: Sequence[float], measured: Sequence[float], order: Sequence[int] | None = None,
                    drift_threshold: float = 0.15) -> dict[str, Any]:
    """:func:`fidelity` on all rows, plus the drift share and the metrics without the drifted rows.

    ``order`` gives the measurement order of the rows (default: as given)."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    idx = np.argsort(np.asarray(order)) if order is not None else np.arange(len(m))
    drift = np.zeros(len(m), dtype=bool)
    drift[idx] = drift_mask(p[idx], m[idx], drift_threshold)
    out: dict[str, Any] = fidelity(p, m)
    out["drift_rows_pct"] = float(drift.mean() * 100)
    if drift.any() and (~drift).sum() > 2:
        out["without_drift"] = fidelity(p[~drift], m[~drift])
    return out


def plot_fidelity(predicted: Sequence[float], measured: Sequence[float], path: str | os.PathLike[str],
                  title: str = "", order: Sequence[int] | None = None) -> None:
    """Two panels: predicted vs measured (±10 % band) and relative residual vs measurement order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    idx = np.argsort(np.asarray(order)) if order is not None else np.arange(len(m))
    stats = fidelity(p, m)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    lo, hi = float(min(p.min(), m.min())) * 0.95, float(max(p.max(), m.max())) * 1.05
    line = np.linspace(lo, hi, 50)
    a.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, label="±10 %")
    a.plot(line, line, color="tab:green", lw=1)
    a.scatter(m, p, s=6, alpha=0.5)
    a.set_xlabel("measured latency (ms)")
    a.set_ylabel("predicted latency (ms)")
    a.set_title(f"{title}\nRMSE {stats['rmse_ms']:.3g} ms, ±10 %: {stats['within_10_pct']:.1f} %, "
                f"Spearman {stats['spearman']:.3f}", fontsize=9)
    a.legend(loc="upper left", fontsize=8)
    rel = (m[idx] / p[idx] - 1.0) * 100
    b.scatter(np.arange(len(rel)), rel, s=4, alpha=0.5)
    b.plot(np.arange(len(rel)), running_median(rel, 9), color="tab:red", lw=1, label="running median (9)")
    b.axhspan(-10, 10, color="tab:green", alpha=0.12)
    b.axhline(0, color="k", lw=0.6)
    b.set_xlabel("measurement order")
    b.set_ylabel("measured / predicted - 1 (%)")
    b.set_title("residual against measurement order (drift shows as blocks)", fontsize=9)
    b.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
