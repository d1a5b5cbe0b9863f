"""The correlation study: how well does each zero-shot proxy rank a space's architectures?

``run_study`` scores a seeded random sample of architectures with every proxy (one batch of real images,
one seed), gets each architecture's real accuracy, and reports Spearman's rho and Kendall's tau per proxy
and for the mean-rank ensemble, with the time each proxy takes per architecture. The accuracies come from
NAS-Bench-201's table for the ``nb201`` space (test accuracy after 200 epochs, Dong & Yang, ICLR 2020)
and, for any other space, from training each sampled architecture briefly with the project's ``train``
estimator (so the study also shows whether a proxy transfers beyond NB201).

Scores go to a JSON-lines checkpoint as they are computed, so a killed study resumes where it stopped;
results are written atomically: ``study.json`` (settings, machine, per-proxy figures, per-arch scores) and
one scatter plot per proxy under ``plots/``.

Timing: by default the six proxies that run the network on the batch (naswot, grad_norm, snip, fisher,
grasp, jacob_cov) share one forward pass (:mod:`.shared`), so their cost per architecture is one joint
figure; every ``time_every``-th architecture is also scored proxy by proxy, which gives each proxy's own
time (and checks that shared and standalone scores agree).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies import PROXIES, get_proxy, mean_rank_vote, parse_members
from edgenas.estimators.proxies.base import check_batch_size
from edgenas.estimators.proxies.ensemble import count_nonfinite, finite_or_last
from edgenas.io import atomic_write_json, machine_info
from edgenas.spaces.base import Arch, SearchSpace

#: |Spearman rho| on NB201 CIFAR-10 as published (Abdelfattah et al., ICLR 2021, all 15,625 archs, batch
#: 64; NASWOT: Mellor et al., ICML 2021; #params: both papers).
PUBLISHED_NB201: dict[str, float] = {
    "grad_norm": 0.59, "snip": 0.60, "grasp": 0.51, "fisher": 0.36, "synflow": 0.74, "jacob_cov": 0.73,
    "naswot": 0.79, "params": 0.75,
}

Progress = Callable[[int, int, str], None]


@dataclass
class StudySettings:
    """What a study scores and against what; ``to_json`` is stored in the checkpoint to match resumes."""

    space: str
    data: str
    archs: int = 100
    batch: int = 64
    seed: int = 0  # the batch and the networks' initialisation
    arch_seed: int | None = None  # the sample of architectures (default: ``seed``)
    proxies: tuple[str, ...] = tuple(PROXIES)
    ensemble: tuple[str, ...] = ()
    share: bool = True
    time_every: int = 10
    accuracy: str = "auto"  # nb201: the table's cifar10 column; other spaces: "train"
    epochs: int = 3
    max_train: int | None = None
    grasp_hvp: str = "exact"  # GraSP's Hessian-vector product (proxies.grasp)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["proxies"], d["ensemble"] = list(self.proxies), list(self.ensemble)
        return d


@dataclass
class ArchRecord:
    """One scored architecture."""

    index: int
    arch: Arch
    scores: dict[str, float]
    seconds: dict[str, float]
    accuracy: float = float("nan")


@dataclass
class StudyResult:
    settings: StudySettings
    records: list[ArchRecord]
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def scores(self, name: str) -> np.ndarray:
        return np.array([r.scores[name] for r in self.records], dtype=np.float64)

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([r.accuracy for r in self.records], dtype=np.float64)


# --------------------------------------------------------------------------------------------- sampling
def sample_archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    """``n`` distinct architectures drawn uniformly with ``seed`` (distinct by ``space.key``)."""
    rng = np.random.default_rng(seed)
    total = space.size()
    if n > total:
        raise EdgenasError(f"asked for {n} architectures but space '{space.name}' has only {total}")
    out, seen = [], set()
    tries = 0
    while len(out) < n:
        arch = space.sample(rng)
        key = space.key(arch)
        tries += 1
        if key not in seen:
            seen.add(key)
            out.append(arch)
        elif tries > 100 * n:
            raise EdgenasError(f"could not draw {n} distinct architectures from space '{space.name}'")
    return out


# ---------------------------------------------------------------------------------------------- scoring
def score_arch(
    space: SearchSpace, arch: Arch, data: Any, names: Sequence[str], batch_size: int, seed: int,
    share: bool = True, standalone_times: bool = False, grasp_hvp: str = "exact",
) -> tuple[dict[str, float], dict[str, float]]:
    """Scores and seconds of every proxy in ``names`` for one architecture.

    With ``share`` the data-dependent proxies come from one shared pass (its time under ``shared``);
    with ``standalone_times`` each of them is also run alone, timed under its own name (and its
    standalone score must match the shared one). ``grasp_hvp`` is GraSP's Hessian-vector product method.
    """
    from edgenas.estimators.proxies.shared import SHARED, shared_scores

    resolution = space.resolution(space.validate(arch))
    batch = data.batch(batch_size, seed, resolution=resolution)
    t0 = time.perf_counter()
    model = space.build(arch, data.num_classes, data.in_channels, seed)
    seconds: dict[str, float] = {"build": time.perf_counter() - t0}
    scores: dict[str, float] = {}
    grouped = [n for n in names if share and n in SHARED]
    if grouped:
        t0 = time.perf_counter()
        scores.update(shared_scores(model, batch, seed, grouped, hvp=grasp_hvp))
        seconds["shared"] = time.perf_counter() - t0
    for name in names:
        if name in grouped and not standalone_times:
            continue
        t0 = time.perf_counter()
        value = get_proxy(name)(model, batch, seed, **({"hvp": grasp_hvp} if name == "grasp" else {}))
        seconds[name] = time.perf_counter() - t0
        if name in grouped:
            # a shared pass with GraSP frozen runs channels-last: the same scores up to float rounding, which
            # Fisher's and jacob_cov's cancellations amplify to ~1e-2 relative on NB201 cells
            channels_last = grasp_hvp == "frozen" and "grasp" in grouped
            if not _same(value, scores[name], 2e-2 if channels_last and name != "grasp" else 1e-5):
                raise AssertionError(f"shared and standalone {name} differ: {scores[name]} vs {value}")
        else:
            scores[name] = value
    return scores, seconds


def _same(a: float, b: float, rel_tol: float = 1e-5) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


# ------------------------------------------------------------------------------------------ correlation
def correlation(scores: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray,
                ) -> dict[str, Any]:
    """Spearman's rho and Kendall's tau of ``scores`` against ``accuracy``; NaN/inf scores rank last and
    are counted. Architectures without an accuracy (NaN) are left out."""
    s, a = np.asarray(scores, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    keep = np.isfinite(a)
    s, a = s[keep], a[keep]
    out: dict[str, Any] = {"n": int(len(a)), "nonfinite": count_nonfinite(s)}
    if len(a) < 3 or np.ptp(finite_or_last(s)) == 0 or np.ptp(a) == 0:  # undefined for a constant
        out.update(spearman=float("nan"), kendall=float("nan"))
        return out
    values = finite_or_last(s)
    out["spearman"] = float(spearmanr(values, a).statistic)
    out["kendall"] = float(kendalltau(values, a).statistic)
    return out


def figures(result: StudyResult) -> dict[str, dict[str, Any]]:
    """Per proxy (and the ensemble): rho, tau, non-finite count, mean seconds per architecture."""
    acc = result.accuracies
    out: dict[str, dict[str, Any]] = {}
    names = list(result.settings.proxies)
    for name in names:
        fig = correlation(result.scores(name), acc)
        fig["seconds_per_arch"] = _mean_seconds(result.records, name)
        out[name] = fig
    members = list(result.settings.ensemble)
    if members:
        vote = mean_rank_vote({m: result.scores(m) for m in members}, members)
        fig = correlation(vote, acc)
        fig["members"] = members
        fig["seconds_per_arch"] = float(sum(out[m]["seconds_per_arch"] for m in members))
        out["ensemble"] = fig
    out["_timing"] = timing_summary(result)
    return out


def timing_summary(result: StudyResult) -> dict[str, Any]:
    """Seconds per architecture for all proxies together: as the study ran them (shared pass plus the
    others), and as the sum of each proxy's own standalone time."""
    from edgenas.estimators.proxies.shared import SHARED

    names = list(result.settings.proxies)
    grouped = [n for n in names if result.settings.share and n in SHARED]
    as_run = [r.seconds.get("shared", 0.0) + sum(r.seconds[n] for n in names if n not in grouped)
              for r in result.records]
    standalone = {n: _mean_seconds(result.records, n) for n in names}
    timed = [r for r in result.records if all(n in r.seconds for n in names)]
    return {
        "all_proxies_as_run_mean": float(np.mean(as_run)) if as_run else float("nan"),
        "all_proxies_as_run_max": float(np.max(as_run)) if as_run else float("nan"),
        "all_proxies_standalone_sum_of_means": float(sum(standalone.values())),
        "standalone_timed_archs": len(timed),
        "shared_pass_mean": _mean_seconds(result.records, "shared"),
        "build_mean": _mean_seconds(result.records, "build"),
    }


def _mean_seconds(records: Sequence[ArchRecord], name: str) -> float:
    values = [r.seconds[name] for r in records if name in r.seconds]
    return float(np.mean(values)) if values else float("nan")


# ------------------------------------------------------------------------------------------- accuracies
def nb201_accuracies(space: SearchSpace, archs: Sequence[Arch], shared_data_dir: str,
                     dataset: str = "cifar10") -> np.ndarray:
    """NB201's test accuracy (%) of each architecture, from the reference table."""
    from edgenas.benchmarks.nb201_table import load_nb201

    codes = space.codes(archs)  # type: ignore[attr-defined]
    return np.asarray(load_nb201(shared_data_dir).accuracy_of(dataset)[codes], dtype=np.float64)


# ----------------------------------------------------------------------------------------------- study
def run_study(
    settings: StudySettings,
    out_dir: str | Path,
    bench_data: str | None = None,
    progress: Progress | None = None,
    train_fn: Callable[[Arch], float] | None = None,
    time_limit: float | None = None,
    shard: tuple[int, int] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    gather: bool = True,
) -> StudyResult:
    """Run (or resume) a correlation study and write its JSON and plots under ``out_dir``.

    ``train_fn`` overrides how a non-NB201 architecture's accuracy is obtained (default: the project's
    ``train`` estimator with ``settings.epochs``). With ``time_limit`` (seconds) the study stops scoring
    when the time is up and reports the architectures scored so far (``figures["_partial"]`` says how
    many of how many); running it again resumes from the checkpoint. With ``shard=(k, n)`` it scores only
    the architectures whose index is ``k`` modulo ``n``: ``n`` processes (or machines sharing the folder)
    each take one shard and append to the same checkpoint, line by line; a final run without a shard
    finds everything scored and writes the figures. With ``workers`` > 1 the shards run as Ray tasks (on this
    machine, or on the cluster at ``ray_address`` when its nodes share ``out_dir``), and this call gathers them.
    With ``gather=False`` it only scores (the records so far, no figures or files): what each worker runs.
    """
    from edgenas.evaluators import EvalContext
    from edgenas.spaces import get_space

    for name in settings.proxies:
        check_batch_size(get_proxy(name), settings.batch)
    if settings.ensemble:
        parse_members("+".join(settings.ensemble))
        missing = [m for m in settings.ensemble if m not in settings.proxies]
        if missing:
            raise EdgenasError(f"ensemble member '{missing[0]}' is not among the scored proxies")
    if settings.archs < 3:
        raise EdgenasError(f"a correlation needs at least 3 architectures, got --archs {settings.archs}")
    if workers > 1:
        if shard is not None:
            raise EdgenasError("--workers splits the study into shards itself; leave out --shard")
        if train_fn is not None:
            raise EdgenasError("a custom train_fn runs in this process only; use workers=1 with it")
        _score_on_ray(settings, out_dir, bench_data, progress, time_limit, workers, ray_address)
        progress = None  # everything the workers scored is in the checkpoint: what is left is the gathering
    space = get_space(settings.space)
    ctx = EvalContext(space=space, data_spec=settings.data, seed=settings.seed, epochs=settings.epochs,
                      bench_data=bench_data, max_train=settings.max_train)
    use_table = _uses_table(settings, space)
    shared_dir = ctx.shared_data_dir() if use_table else None  # fail early, before any scoring
    data = ctx.data
    arch_seed = settings.seed if settings.arch_seed is None else settings.arch_seed
    archs = sample_archs(space, settings.archs, arch_seed)
    out = Path(out_dir)
    checkpoint = _Checkpoint(out / "checkpoint.jsonl", settings)
    records = checkpoint.load()

    if use_table:
        accuracies = nb201_accuracies(space, archs, shared_dir or "", "cifar10")
    else:
        accuracies = np.full(len(archs), np.nan)
        trainer = train_fn or _default_trainer(ctx)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise EdgenasError(f"shard {shard[0]}/{shard[1]} is not one of 0/N .. N-1/N")
    for i, arch in enumerate(archs):
        if i in records or (shard is not None and i % shard[1] != shard[0]):
            continue
        if deadline is not None and time.monotonic() >= deadline:
            break
        scores, seconds = score_arch(
            space, arch, data, settings.proxies, settings.batch, settings.seed, share=settings.share,
            standalone_times=settings.share and settings.time_every > 0 and i % settings.time_every == 0,
            grasp_hvp=settings.grasp_hvp,
        )
        acc = float(accuracies[i]) if use_table else float("nan")
        if not use_table:
            t0 = time.perf_counter()
            acc = float(trainer(arch))
            seconds["train"] = time.perf_counter() - t0
        records[i] = ArchRecord(i, space.validate(arch), scores, seconds, acc)
        checkpoint.append(records[i])
        if progress:
            progress(len(records), len(archs), space.key(arch))
    done = sorted(records)
    if not gather:
        return StudyResult(settings, [records[i] for i in done])
    if len(done) < 3:
        raise EdgenasError(f"the time limit stopped the study after {len(done)} architectures; a correlation "
                           "needs at least 3 (run it again to resume, or give it more time)")
    result = StudyResult(settings, [records[i] for i in done])
    result.figures = figures(result)
    if len(done) < len(archs):
        result.figures["_partial"] = {"scored": len(done), "asked": len(archs)}
    result.figures["_accuracy_source"] = {
        "kind": "table" if use_table else "trained",
        "detail": "NAS-Bench-201 CIFAR-10 test accuracy, 200 epochs" if use_table
        else _describe(trainer) + (f" (first {settings.max_train} training images)" if settings.max_train else ""),
    }
    write_result(result, out)
    return result


def _score_shard(settings: StudySettings, out_dir: str, bench_data: str | None, time_limit: float | None,
                 shard: tuple[int, int], cwd: str) -> int:
    """One Ray task: score one shard into the shared checkpoint (no gathering); the count it scored."""
    import os

    import torch

    os.chdir(cwd)
    torch.set_num_threads(1)
    return len(run_study(settings, out_dir, bench_data, time_limit=time_limit, shard=shard, gather=False).records)


def _score_on_ray(settings: StudySettings, out_dir: str | Path, bench_data: str | None, progress: Progress | None,
                  time_limit: float | None, workers: int, address: str | None) -> None:
    """Score the study's shards as ``workers`` Ray tasks, reporting progress from the shared checkpoint."""
    import os

    from edgenas.executors import RESTARTS, start_ray

    started = start_ray(workers, address)
    import ray

    try:
        checkpoint = _Checkpoint(Path(out_dir) / "checkpoint.jsonl", settings)
        checkpoint.load()  # written once here, so that the tasks only ever append
        task = ray.remote(num_cpus=1, max_retries=RESTARTS)(_score_shard)
        pending = [task.remote(settings, str(out_dir), bench_data, time_limit, (k, workers), os.getcwd())
                   for k in range(workers)]
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            if progress:
                progress(len(checkpoint.load()), settings.archs, "")
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, EdgenasError):
            raise cause from None
        raise
    finally:
        if started:
            ray.shutdown()


def _uses_table(settings: StudySettings, space: SearchSpace) -> bool:
    if settings.accuracy == "auto":
        return space.name == "nb201"
    if settings.accuracy not in ("table", "train"):
        raise EdgenasError(f"accuracy source '{settings.accuracy}' is not one of auto, table, train")
    if settings.accuracy == "table" and space.name != "nb201":
        raise EdgenasError(f"space '{space.name}' has no accuracy table; use --accuracy train")
    return settings.accuracy == "table"


def _describe(trainer: Any) -> str:
    describe = getattr(trainer, "describe", None)
    return str(describe()) if callable(describe) else f"{type(trainer).__module__}.{type(trainer).__name__}"


def _default_trainer(ctx: Any) -> Callable[[Arch], float]:
    """The project's ``train`` estimator (:class:`edgenas.estimators.train.TrainEstimator`)."""
    from edgenas.evaluators import make_estimator

    return make_estimator("train", ctx)


class _Checkpoint:
    """A JSON-lines file: a header with the settings, then one scored architecture per line."""

    def __init__(self, path: Path, settings: StudySettings) -> None:
        self.path, self.settings = path, settings

    def load(self) -> dict[int, ArchRecord]:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": self.settings.to_json()}) + "\n")
            return {}
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])["settings"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if isinstance(header, dict):  # studies from before a setting existed ran with what is now its value
            header = {"grasp_hvp": "exact", **header}
        if header != self.settings.to_json():
            raise EdgenasError(
                f"'{self.path}' holds a study with other settings; pass another --out or delete the file"
            )
        records = {}
        for line in lines[1:]:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: its arch is scored again
            records[int(d["index"])] = ArchRecord(**d)
        return records

    def append(self, record: ArchRecord) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(record)) + "\n")
            f.flush()


# -------------------------------------------------------------------------------------------- outputs
def _clean(x: Any) -> Any:
    """JSON without NaN/inf (they become null; the per-proxy ``nonfinite`` counts say how many)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.floating | np.integer):
        return _clean(x.item())
    return x


def result_json(result: StudyResult) -> dict[str, Any]:
    return _clean({
        "settings": result.settings.to_json(),
        "machine": machine_info(),
        "figures": result.figures,
        "published_nb201_abs_spearman": PUBLISHED_NB201 if result.settings.space == "nb201" else None,
        "records": [asdict(r) for r in result.records],
    })


def write_result(result: StudyResult, out_dir: str | Path) -> None:
    out = Path(out_dir)
    atomic_write_json(out / "study.json", result_json(result))
    write_plots(result, out / "plots")


def write_plots(result: StudyResult, folder: Path) -> None:
    """One scatter plot per proxy (score against accuracy) and one for the ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    acc = result.accuracies
    series = {name: result.scores(name) for name in result.settings.proxies}
    if result.settings.ensemble:
        series["ensemble"] = mean_rank_vote(series, result.settings.ensemble)
    for name, s in series.items():
        fig = result.figures.get(name, {})
        ok = np.isfinite(s) & np.isfinite(acc)
        f, ax = plt.subplots(figsize=(4.2, 3.4), dpi=110)
        x = s[ok]
        if len(x) and np.all(x > 0) and x.max() / max(x.min(), 1e-300) > 1e3:
            ax.set_xscale("log")
        ax.scatter(x, acc[ok], s=6, alpha=0.5, linewidths=0)
        label = "mean rank" if name == "ensemble" else "score"
        ax.set_xlabel(f"{name} {label}")
        ax.set_ylabel("accuracy (%)")
        rho, tau = fig.get("spearman", float("nan")), fig.get("kendall", float("nan"))
        ax.set_title(f"{name}: rho={rho:.3f} tau={tau:.3f} (non-finite {int((~ok).sum())})", fontsize=9)
        f.tight_layout()
        f.savefig(folder / f"{name}.png")
        plt.close(f)
