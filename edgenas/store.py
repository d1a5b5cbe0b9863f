"""The trial store: an Optuna study in ``OUT/study.db`` (SQLite) plus human-readable mirrors.

Each finished evaluation is added to the study as one trial before the next evaluation starts: feasible
ones as COMPLETE with their objective values, infeasible ones (a constraint failed, so the expensive
estimator never ran) as PRUNED. The architecture and every metric ride along as user attributes, so the
study alone is enough to resume a search, to rebuild a strategy by replay, or to open it in Optuna's own
tools. ``trials.csv`` and ``pareto.json`` are rewritten atomically after each trial.

Several processes may open one store at once (workers sharing a search): creating the study's tables is
serialised by an exclusive lock on ``OUT/study.db.lock`` (SQLite would otherwise let two of them race to
create the same tables and one fail).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.search.pareto import pareto_mask
from edgenas.spaces.base import SearchSpace

STUDY_NAME = "edgenas"
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TrialRecord:
    """One evaluated architecture as stored."""

    number: int
    arch: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"trial": self.number, "arch": self.arch, "metrics": self.metrics, "feasible": self.feasible,
                "seconds": round(self.seconds, 3)}


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block; where the platform
    has no ``fcntl`` (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TrialStore:
    """Stores trials of one search in ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str | Path, directions: Sequence[str]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "study.db"
        self.directions = list(directions)
        with exclusive_lock(self.out_dir / "study.db.lock"):
            self.study = optuna.create_study(
                storage=f"sqlite:///{self.path}", study_name=STUDY_NAME, directions=self.directions,
                load_if_exists=True,
            )

    @classmethod
    def open(cls, out_dir: str | Path) -> TrialStore:
        """Open an existing store (directions read from the study)."""
        path = Path(out_dir) / "study.db"
        study = optuna.load_study(storage=f"sqlite:///{path}", study_name=STUDY_NAME)
        return cls(out_dir, [d.name.lower() for d in study.directions])

    def records(self) -> list[TrialRecord]:
        """Every stored evaluation, in order."""
        out = []
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in self.study.get_trials(deepcopy=False, states=states):
            if "arch" not in t.user_attrs:
                continue
            out.append(TrialRecord(
                number=t.number, arch=dict(t.user_attrs["arch"]),
                metrics={k: float(v) for k, v in t.user_attrs.get("metrics", {}).items()},
                feasible=bool(t.user_attrs.get("feasible", t.state == optuna.trial.TrialState.COMPLETE)),
                seconds=float(t.user_attrs.get("seconds", 0.0)),
            ))
        return sorted(out, key=lambda r: r.number)

    def add(
        self, space: SearchSpace, arch: Mapping[str, Any], metrics: Mapping[str, float], feasible: bool,
        objectives: Sequence[str], seconds: float,
    ) -> TrialRecord:
        """Store one finished evaluation (a single SQLite transaction)."""
        arch = space.validate(arch)
        values = [float(metrics[o]) for o in objectives] if feasible else None
        ok = values is not None and all(math.isfinite(v) for v in values)
        state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.PRUNED
        clean = {k: float(v) for k, v in metrics.items()}
        trial = optuna.trial.create_trial(
            params={n: arch[n] for n in space.active_names(arch)},
            distributions=space.distributions(arch),
            values=values if ok else None,
            state=state,
            user_attrs={"arch": arch, "metrics": clean, "feasible": bool(ok), "seconds": seconds},
        )
        self.study.add_trial(trial)
        number = len(self.study.get_trials(deepcopy=False)) - 1
        return TrialRecord(number, arch, clean, bool(ok), seconds)


def pareto_records(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> list[TrialRecord]:
    """The feasible records on the Pareto front of ``objectives`` (name, direction)."""
    feasible = [r for r in records if r.feasible]
    if not feasible:
        return []
    pts = np.array([[r.metrics[n] for n, _ in objectives] for r in feasible])
    mask = pareto_mask(pts, [d for _, d in objectives])
    front = [r for r, m in zip(feasible, mask, strict=True) if m]
    return sorted(front, key=lambda r: tuple(r.metrics[n] for n, _ in objectives))


def best_record(
    records: Sequence[TrialRecord], metric: str = "accuracy", direction: str = "maximize"
) -> TrialRecord | None:
    """The feasible record with the best ``metric`` (ties: the earliest)."""
    feasible = [r for r in records if r.feasible and math.isfinite(r.metrics.get(metric, math.nan))]
    if not feasible:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    return max(feasible, key=lambda r: (sign * r.metrics[metric], -r.number))


def write_trials_csv(path: str | Path, records: Sequence[TrialRecord]) -> None:
    """``trial, feasible, <every metric>, seconds, arch`` (arch as JSON), atomically."""
    metrics = sorted({k for r in records for k in r.metrics})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "feasible", *metrics, "seconds", "arch"])
    for r in records:
        w.writerow([r.number, int(r.feasible), *[_fmt(r.metrics.get(m)) for m in metrics],
                    f"{r.seconds:.3f}", json.dumps(r.arch, sort_keys=True)])
    atomic_write_text(path, buf.getvalue())


def _fmt(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


def write_pareto_json(
    path: str | Path, records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]],
    constraints: Mapping[str, float],
) -> None:
    front = pareto_records(records, objectives)
    best = best_record(records, *objectives[0])
    atomic_write_json(path, {
        "objectives": [{"metric": n, "direction": d} for n, d in objectives],
        "constraints": {k: {"max": v} for k, v in constraints.items()},
        "trials": len(records),
        "feasible": sum(r.feasible for r in records),
        "best": best.to_json() if best else None,
        "front": [r.to_json() for r in front],
    })
