"""Run a hardware-aware search: strategy + evaluators + constraints + store, resumable.

An :class:`ExperimentConfig` says what to search (space, data, estimator, device target, strategy,
budget, objectives, constraints, seed). :class:`Experiment` runs it:

1. cheap metrics first (latency on the target, params, MACs); a candidate that breaks a constraint is
   stored as infeasible and never costs an accuracy evaluation;
2. the accuracy estimator on feasible candidates; the budget counts these evaluations;
3. every finished evaluation goes to the store before the next one starts, and ``trials.csv`` /
   ``pareto.json`` are rewritten atomically.

A killed run resumes (``resume=True``) from the store, losing at most the evaluations in flight (one, or
up to ``workers`` with a Ray executor, :mod:`edgenas.executors`): the strategy is rebuilt by replaying the
stored trials, and no stored architecture is evaluated again. Before the
search, the smallest architecture of the space is checked against the constraints, so that an impossible
budget is reported at once with the smallest latency found.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgenas.errors import ConstraintUnsatisfiable, EdgenasError
from edgenas.evaluators import COSTS, EvalContext, Evaluator, make_cost, make_estimator, make_target
from edgenas.executors import Executor, make_executor
from edgenas.io import atomic_write_json
from edgenas.search import TrialResult, make_strategy
from edgenas.spaces import get_space
from edgenas.spaces.base import Arch
from edgenas.store import (
    TrialRecord,
    TrialStore,
    best_record,
    pareto_records,
    write_pareto_json,
    write_trials_csv,
)

#: latency from the target (energy too, from an ``accel:`` target); the rest computed from the built network
COST_METRICS = ("latency", "energy", *COSTS)
METRICS = ("accuracy", *COST_METRICS)


@dataclass
class ExperimentConfig:
    """Everything that defines a search; saved as ``OUT/config.json``."""

    out: str
    space: str = "mbv3-tiny"
    data: str = "digits"
    estimator: str = "train"
    target: str | None = "cpu"
    strategy: str = "evolution"
    budget: int = 20
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "latency"])
    constraints: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 2
    batch_size: int = 32
    backend: str = "onnxruntime"
    threads: int = 1
    population_size: int = 10
    sample_size: int = 3
    max_train: int | None = None
    keep_weights: bool = True
    cache_dir: str | None = None
    bench_data: str | None = None
    max_rejections: int | None = None
    estimator_options: dict[str, Any] = field(default_factory=dict)  # EvalContext.options (--estimator-option)
    workers: int = 1  # accuracy evaluations at once; > 1 runs them on Ray actors (edgenas.executors)
    ray_address: str | None = None  # a running Ray cluster (default: $RAY_ADDRESS, else a local one)

    def validate(self) -> None:
        if self.budget <= 0:
            raise EdgenasError(f"--budget must be a positive number of evaluations, got {self.budget}")
        if self.epochs <= 0:
            raise EdgenasError(f"--epochs must be positive, got {self.epochs}")
        if self.workers <= 0:
            raise EdgenasError(f"--workers must be a positive number of parallel evaluations, got {self.workers}")
        if not self.objectives:
            raise EdgenasError("give at least one objective, e.g. --objectives accuracy,latency")
        for m in [*self.objectives, *self.constraints]:
            if m not in METRICS:
                from edgenas.errors import unknown_name

                raise unknown_name("metric", m, METRICS)
        from edgenas.estimators.options import parse_estimator_option

        for key, value in self.estimator_options.items():
            parse_estimator_option(f"{key}={value}")
        if len(set(self.objectives)) != len(self.objectives):
            raise EdgenasError(f"objectives repeat a metric: {','.join(self.objectives)}")
        needs_target = "latency" in self.objectives or "latency" in self.constraints
        if needs_target and not self.target:
            raise EdgenasError("a latency objective or constraint needs a --target (e.g. cpu)")
        for m, v in self.constraints.items():
            if not (isinstance(v, int | float) and v > 0 and math.isfinite(v)):
                raise EdgenasError(f"constraint {m} <= {v} must be a positive number")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, out: str | Path) -> ExperimentConfig:
        path = Path(out) / "config.json"
        if not path.exists():
            raise EdgenasError(f"'{out}' holds no edgenas search (no config.json); run 'edgenas search' first")
        return cls.from_json(json.loads(path.read_text()))


def eval_context(config: ExperimentConfig) -> EvalContext:
    """The evaluation context of a search: the same in the experiment and in every worker."""
    out = Path(config.out)
    return EvalContext(
        space=get_space(config.space), data_spec=config.data, seed=config.seed, epochs=config.epochs,
        batch_size=config.batch_size, backend=config.backend, threads=config.threads,
        cache_dir=config.cache_dir or str(out / "cache"),
        weights_dir=str(out / "weights") if config.keep_weights else None,
        bench_data=config.bench_data, max_train=config.max_train, options=dict(config.estimator_options),
    )


def accuracy_estimator(config: ExperimentConfig, ctx: EvalContext) -> Evaluator:
    """The search's accuracy estimator (the experiment's and every worker's). On a co-design space it is
    made for the network space, sees only the network part of each candidate, and runs once per network."""
    space = ctx.space
    if not hasattr(space, "network_key"):
        return make_estimator(config.estimator, ctx)
    from dataclasses import replace

    from edgenas.codesign.costs import SharedNetworkAccuracy

    net_ctx = replace(ctx, space=space.network)
    if "data" in ctx.__dict__:  # already loaded: share it
        net_ctx.__dict__["data"] = ctx.__dict__["data"]
    return SharedNetworkAccuracy(make_estimator(config.estimator, net_ctx), space)


@dataclass
class ExperimentResult:
    out: Path
    records: list[TrialRecord]
    front: list[TrialRecord]
    best: TrialRecord | None
    stopped_because: str = "budget reached"


ProgressFn = Callable[[int, int, TrialRecord], None]


class Experiment:
    """Runs one :class:`ExperimentConfig` (see the module docstring)."""

    def __init__(self, config: ExperimentConfig) -> None:
        config.validate()
        self.config = config
        self.out = Path(config.out)
        self.space = get_space(config.space)
        self.ctx = eval_context(config)
        self.objectives = [(m, "maximize" if m == "accuracy" else "minimize") for m in config.objectives]
        self.strategy = self._make_strategy()
        self.evaluators = self._make_evaluators()
        self._set_feasibility_filter()
        self.store: TrialStore | None = None
        self.records: list[TrialRecord] = []
        self.executor: Executor | None = None
        self._owns_executor = False

    # ------------------------------------------------------------------ set-up
    def _make_evaluators(self) -> dict[str, Evaluator]:
        cfg = self.config
        if not self.space.builder and not (cfg.estimator or "").startswith("tabular:"):
            # the estimator trains or scores built networks: a space without a builder says so now (its own
            # one-line error), not at the first candidate
            self.space.build(self.space.extreme(smallest=True), 10)
        wanted = set(cfg.objectives) | set(cfg.constraints) | {"accuracy"}
        if self.space.builder:
            wanted |= {"params", "flops"}
        evs: dict[str, Evaluator] = {}
        if hasattr(self.space, "network_key") and not (cfg.target or "").startswith("accel:"):
            raise EdgenasError(f"space '{cfg.space}' co-designs an accelerator: give --target accel:BASE (e.g. "
                               "accel:eyeriss), whose clock and DRAM the candidates' accelerators share")
        if cfg.target:
            evs["latency"] = make_target(cfg.target, self.ctx)
        if "energy" in wanted:
            from edgenas.hardware.accelerator import AcceleratorEnergy, AcceleratorLatency

            if not isinstance(evs.get("latency"), AcceleratorLatency):
                raise EdgenasError("the metric 'energy' comes from the accelerator model: give --target accel:NAME "
                                   "(e.g. accel:eyeriss)")
            evs["energy"] = AcceleratorEnergy.beside(evs["latency"])
        for m in COSTS:
            if m in wanted:
                evs[m] = make_cost(m, self.ctx)
        evs["accuracy"] = accuracy_estimator(cfg, self.ctx)
        return evs

    def _make_strategy(self) -> Any:
        cfg = self.config
        kwargs: dict[str, Any] = {"objectives": self.objectives, "seed": cfg.seed}
        if cfg.strategy == "evolution":
            kwargs.update(population_size=cfg.population_size, sample_size=cfg.sample_size)
        if cfg.strategy == "nsga2":
            kwargs.update(population_size=cfg.population_size)
        return make_strategy(cfg.strategy, self.space, **kwargs)

    def _set_feasibility_filter(self) -> None:
        """Let the strategy skip candidates that an instant cost model (LUT, predictor) rules out."""
        cons = self.config.constraints
        instant = {m: b for m, b in cons.items() if getattr(self.evaluators.get(m), "instant", False)}
        if instant:
            self.strategy.feasible = lambda arch: all(self.evaluators[m](arch) <= b for m, b in instant.items())

    def _prepare_out(self, resume: bool) -> None:
        cfg_path = self.out / "config.json"
        if cfg_path.exists() and (self.out / "study.db").exists() and TrialStore.open(self.out).records():
            if not resume:
                raise EdgenasError(
                    f"'{self.out}' already holds a search; pass --resume to continue it or choose another --out"
                )
            stored = ExperimentConfig.load(self.out).to_json()
            mine = self.config.to_json()
            free = ("budget", "out", "max_rejections", "workers", "ray_address")  # may change on resume
            differ = [k for k in mine if k not in free and stored.get(k) != mine[k]]
            if differ:
                k = differ[0]
                raise EdgenasError(
                    f"--resume with a different {k} ({mine[k]!r}) than the stored search ({stored.get(k)!r}); "
                    f"resume with the same settings (only --budget may change)"
                )
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_path, self.config.to_json())

    # ------------------------------------------------------------- evaluation
    def cost_metrics(self, arch: Mapping[str, Any]) -> dict[str, float]:
        return {m: float(ev(arch)) for m, ev in self.evaluators.items() if m != "accuracy"}

    def violations(self, metrics: Mapping[str, float]) -> list[str]:
        return [f"{m} {metrics[m]:.4g} > {b:.4g}" for m, b in self.config.constraints.items()
                if m in metrics and not metrics[m] <= b]

    def check_reachable(self) -> None:
        """Fail early if even the smallest architecture breaks a (cheap) constraint."""
        cost_constraints = {m: b for m, b in self.config.constraints.items() if m in COST_METRICS}
        if not cost_constraints:
            return
        # the architectures that minimise a cost: the smallest one, or a few (a co-design space's smallest network
        # on its smallest and on its fastest accelerators); a constraint none of them meets is unreachable
        candidates = self.space.extremes() if hasattr(self.space, "extremes") else [self.space.extreme(smallest=True)]
        measured = [self.cost_metrics(a) for a in candidates]
        best = {m: min(metrics[m] for metrics in measured) for m in cost_constraints}
        for m, bound in cost_constraints.items():
            if not best[m] <= bound:
                unit = self.evaluators[m].unit
                raise ConstraintUnsatisfiable(
                    f"no architecture of '{self.space.name}' can meet {m} <= {bound:g} {unit}: "
                    f"the smallest architecture has {m} {best[m]:.4g} {unit}; relax the constraint"
                )

    # -------------------------------------------------------------------- run
    def start(self, resume: bool = False, executor: Executor | None = None) -> None:
        """Open the store, rebuild the strategy from stored trials, check the constraints are reachable, and
        set up where the accuracy evaluations run: ``executor``, or by default
        :func:`edgenas.executors.make_executor` of the config (in this process for ``workers`` 1, else Ray
        actors; an unreachable cluster fails here, before anything runs)."""
        self._prepare_out(resume)
        self.store = TrialStore(self.out, [d for _, d in self.objectives])
        self.records = self.store.records()
        for r in self.records:  # rebuild the strategy's state by replay
            self.strategy.tell(r.arch, TrialResult(r.metrics, r.feasible))
        self.strategy.n_asked = len(self.records)
        if not self.records:
            self.check_reachable()
        self._use_executor(executor)

    def _use_executor(self, executor: Executor | None) -> None:
        """``executor``, or one made from the config (which :meth:`run` then closes at its end)."""
        self._owns_executor = executor is None
        self.executor = executor or make_executor(self.config.to_json(), self.evaluators["accuracy"])

    def run(self, resume: bool = False, progress: ProgressFn | None = None,
            executor: Executor | None = None) -> ExperimentResult:
        """Run (or continue) the search until the budget is spent; see the module docstring.

        Accuracy evaluations go to the executor of :meth:`start` (``executor`` here if it has not run yet),
        up to ``executor.workers`` candidates at a time: the strategy proposes that many before it is told
        their results (in the order it proposed them), so with several workers a search explores differently
        from a one-worker one, and a resumed one need not repeat the interrupted run's proposals. The cheap
        metrics stay in this process, one candidate at a time. An executor that :meth:`start` made is closed
        at the end.
        """
        if self.store is None:
            self.start(resume, executor)
        elif executor is not None or self.executor is None:  # a given one, or run again after a run closed its own
            self._use_executor(executor)
        assert self.executor is not None
        try:
            reason = self._search(self.executor, progress)
        finally:
            if self._owns_executor:
                self.executor.close()
                self.executor = None
        self._write_outputs(self.records)
        return ExperimentResult(self.out, self.records, pareto_records(self.records, self.objectives),
                                best_record(self.records, *self.objectives[0]), reason)

    def _search(self, executor: Executor, progress: ProgressFn | None) -> str:
        store = self.store
        assert store is not None
        cfg, strategy, records = self.config, self.strategy, self.records
        seen = {self.space.key(r.arch) for r in records}
        done = sum(r.feasible for r in records)
        rejected = len(records) - done
        max_rejections = cfg.max_rejections or 20 * cfg.budget
        duplicates_in_a_row = 0
        too_many_rejected = ("{} candidates broke the constraints; stopping (the constraints may be too tight "
                             "for this space)")

        def record(arch: Arch, metrics: dict[str, float], feasible: bool, seconds: float) -> None:
            nonlocal done, rejected
            rec = store.add(self.space, arch, metrics, feasible, cfg.objectives, seconds)
            strategy.tell(rec.arch, TrialResult(rec.metrics, rec.feasible))
            records.append(rec)
            self._write_outputs(records)
            done += rec.feasible
            rejected += not rec.feasible
            if progress:
                progress(done, cfg.budget, rec)

        while done < cfg.budget:
            batch: list[tuple[Arch, dict[str, float], float]] = []  # awaiting accuracy: arch, costs, seconds
            stop = None
            while len(batch) < min(executor.workers, cfg.budget - done) and stop is None:
                if strategy.exhausted:
                    stop = "the strategy has proposed every architecture"
                    break
                try:
                    arch = strategy.ask()
                except EdgenasError as exc:
                    stop = str(exc)
                    break
                key = self.space.key(arch)
                if key in seen:
                    duplicates_in_a_row += 1
                    if duplicates_in_a_row > 200:
                        stop = "the strategy keeps proposing architectures already evaluated"
                    continue
                duplicates_in_a_row = 0
                seen.add(key)
                start = time.perf_counter()
                metrics = self.cost_metrics(arch)
                seconds = time.perf_counter() - start
                if self.violations(metrics):  # infeasible: stored at once, never costs an accuracy evaluation
                    record(arch, metrics, False, seconds)
                    if rejected >= max_rejections:
                        stop = too_many_rejected.format(rejected)
                else:
                    batch.append((arch, metrics, seconds))
            outcomes = executor.map([arch for arch, _, _ in batch])
            for (arch, metrics, seconds), (accuracy, eval_seconds) in zip(batch, outcomes, strict=True):
                metrics["accuracy"] = accuracy
                record(arch, metrics, math.isfinite(accuracy) and not self.violations(metrics), seconds + eval_seconds)
                if rejected >= max_rejections and stop is None:
                    stop = too_many_rejected.format(rejected)
            if stop is not None:
                return stop
        return "budget reached"

    def _write_outputs(self, records: list[TrialRecord]) -> None:
        write_trials_csv(self.out / "trials.csv", records)
        write_pareto_json(self.out / "pareto.json", records, self.objectives, self.config.constraints)


def run_search(config: ExperimentConfig, resume: bool = False, progress: ProgressFn | None = None) -> ExperimentResult:
    """Run (or resume) a search; the Python API behind ``edgenas search``."""
    return Experiment(config).run(resume=resume, progress=progress)
