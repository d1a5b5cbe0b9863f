"""Kernel-level latency predictor (nn-Meter, Zhang et al., MobiSys 2021): one regressor per kernel type.

A network's latency is predicted as the sum of its kernels' predicted latencies
(:mod:`edgenas.hardware.kernels`), through a whole-network calibration ``a * sum + b * kernels + c`` fitted
on a few measured networks (the same :class:`~edgenas.hardware.lut.Calibration` as the layer tables: an
isolated kernel pays a call overhead a network pays once, and fused neighbours share caches). Because it
works on kernels, not on a space's encoding, one predictor serves every space and any traceable model --
what per-space layer tables and network-wise predictors cannot do.

Each kernel type's regressor is our gradient-boosted trees (:class:`~edgenas.hardware.regressors.BoostedTrees`,
where nn-Meter uses random forests; both are tree ensembles, and ours is stored as arrays, never pickled)
on the kernel's configuration and log costs, predicting ``log`` latency. :func:`profile_kernels` measures
sampled kernels on this machine (fresh worker processes, fixed threads, onnxruntime; resumable: every
result is appended to a JSONL file as it arrives), :meth:`KernelPredictor.fit` trains, ``save``/``load``
use ``.npz`` with a JSON metadata string (``allow_pickle=False``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.hardware.kernels import KERNEL_TYPES, Kernel, kernels_of_arch
from edgenas.hardware.lut import Calibration
from edgenas.hardware.regressors import BoostedTrees, RobustLinear
from edgenas.io import load_arrays, save_arrays

FORMAT = "edgenas-kernel-predictor/1"
#: Below this many measured kernels a type gets a robust linear model on log costs instead of trees.
MIN_FOR_TREES = 12


class KernelPredictor:
    """``fit(kernels, ms)``, ``predict_kernels(kernels)``, ``predict_network(kernels)``, ``calibrate``."""

    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.05,
                 seed: int = 0) -> None:
        self.params = {"n_estimators": n_estimators, "max_depth": max_depth, "learning_rate": learning_rate,
                       "subsample": 0.8, "max_features": 1.0, "random_state": seed}
        self.models: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.calibration = Calibration()
        self.backend, self.threads = "onnxruntime", 1

    # ------------------------------------------------------------------------------------ fit / predict
    def fit(self, kernels: Sequence[Kernel], latency_ms: Sequence[float]) -> KernelPredictor:
        y_all = np.log(np.maximum(np.asarray(latency_ms, dtype=np.float64), 1e-6))
        for kind in KERNEL_TYPES:
            idx = [i for i, k in enumerate(kernels) if k.type == kind]
            if not idx:
                continue
            X = np.array([kernels[i].features() for i in idx])
            y = y_all[idx]
            if len(idx) >= MIN_FOR_TREES:
                model: Any = BoostedTrees(**self.params, huber_alpha=0.9).fit(X, y)
            else:
                model = RobustLinear(alpha=1.0).fit(X[:, -3:], y)
            self.models[kind], self.counts[kind] = model, len(idx)
        return self

    def out_of_fold_errors(self, kernels: Sequence[Kernel], latency_ms: Sequence[float], folds: int = 5,
                           seed: int = 0) -> np.ndarray:
        """Each kernel's relative error when predicted by a predictor fitted without it (``folds``-fold,
        per type, seeded): where the predictor is weak, which is where nn-Meter samples more."""
        y = np.asarray(latency_ms, dtype=np.float64)
        fold = np.random.default_rng(seed).integers(0, folds, len(kernels))
        err = np.zeros(len(kernels))
        for f in range(folds):
            train = [i for i in range(len(kernels)) if fold[i] != f]
            test = [i for i in range(len(kernels)) if fold[i] == f]
            if not test:
                continue
            sub = KernelPredictor(**{k: self.params[k] for k in ("n_estimators", "max_depth", "learning_rate")},
                                  seed=seed).fit([kernels[i] for i in train], y[train])
            have = [i for i in test if kernels[i].type in sub.models]
            if have:
                err[have] = sub.predict_kernels([kernels[i] for i in have]) / y[have] - 1
        return err

    def predict_kernels(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Predicted latency (ms) of each kernel measured alone."""
        out = np.zeros(len(kernels))
        present = {k.type for k in kernels}
        for kind in (t for t in KERNEL_TYPES if t in present):
            if kind not in self.models:
                raise EdgenasError(f"the kernel predictor has no model for '{kind}' kernels (it was fitted on "
                                   f"{', '.join(sorted(self.models)) or 'none'}); profile kernels of that type")
            idx = [i for i, k in enumerate(kernels) if k.type == kind]
            X = np.array([kernels[i].features() for i in idx])
            model = self.models[kind]
            out[idx] = np.exp(model.predict(X if isinstance(model, BoostedTrees) else X[:, -3:]))
        return out

    def raw_sum(self, kernels: Sequence[Kernel]) -> float:
        return float(self.predict_kernels(kernels).sum())

    def predict_network(self, kernels: Sequence[Kernel]) -> float:
        """Predicted latency (ms) of a whole network given its kernels (calibrated sum)."""
        return float(self.calibration.apply(np.array([self.raw_sum(kernels)]), np.array([len(kernels)]))[0])

    def calibrate(self, networks: Sequence[Sequence[Kernel]], measured_ms: Sequence[float]) -> Calibration:
        """Fit ``measured ~ a * sum + b * kernels + c`` on whole networks measured on the same device.

        The fit is on *relative* errors (each network's row divided by its latency; Huber-weighted), so the
        small networks of one space count as much as the large ones of another; networks the runtime
        reduces to a constant (no kernels) are left out. With fewer than five networks only ``a`` is fitted.
        """
        from edgenas.hardware.lut import huber_lstsq

        keep = [(ks, y) for ks, y in zip(networks, measured_ms, strict=True) if ks and y > 0]
        if not keep:
            raise EdgenasError("no calibration network has kernels and a positive latency")
        s = np.array([self.raw_sum(ks) for ks, _ in keep])
        n = np.array([float(len(ks)) for ks, _ in keep])
        y = np.array([float(v) for _, v in keep])
        X = np.column_stack([s, n, np.ones_like(s)]) if len(y) >= 5 else s[:, None]
        coef = list(huber_lstsq(X / y[:, None], np.ones_like(y))) + [0.0, 0.0]
        cal = Calibration(float(coef[0]), float(coef[1]), float(coef[2]), len(y))
        cal.train_mape = float(np.mean(np.abs(cal.apply(s, n) / y - 1)) * 100)
        self.calibration = cal
        return cal

    # ------------------------------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``path`` (``.npz``: arrays and a JSON metadata string; nothing pickled), atomically."""
        meta = {"format": FORMAT, "params": self.params, "counts": self.counts, "backend": self.backend,
                "threads": self.threads, "calibration": vars(self.calibration),
                "models": {k: {"kind": m.kind if isinstance(m, BoostedTrees) else "linear",
                               "params": m.get_params()} for k, m in self.models.items()}}
        arrays: dict[str, np.ndarray] = {}
        for kind, m in self.models.items():
            arrays.update({f"{kind}.{k}": v for k, v in m.to_arrays().items()})
        save_arrays(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KernelPredictor:
        meta, arrays = load_arrays(path, "kernel predictor", FORMAT, "build it again with 'edgenas latency kernels'")
        pred = cls()
        pred.params, pred.counts = meta["params"], meta["counts"]
        pred.backend, pred.threads = meta["backend"], meta["threads"]
        pred.calibration = Calibration(**meta["calibration"])
        for kind, info in meta["models"].items():
            own = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(kind + ".")}
            model_cls = BoostedTrees if info["kind"] != "linear" else RobustLinear
            pred.models[kind] = model_cls.from_arrays(info["params"], own)
        return pred


# --------------------------------------------------------------------------------------- measuring
def profile_kernels(kernels: Sequence[Kernel], results_path: str | os.PathLike[str], settings: Any,
                    progress: Callable[[int, int], None] | None = None, chunk: int = 64) -> dict[str, float]:
    """Median latency (ms) of every kernel measured alone on this machine, keyed by ``Kernel.key``.

    Results are appended to ``results_path`` (JSONL) as each arrives and read back on the next call, so an
    interrupted profile resumes where it stopped; each chunk of kernels runs in one fresh worker process
    (:func:`edgenas.hardware.layer_measure.measure_modules`).
    """
    from edgenas.hardware.layer_measure import measure_modules

    path = Path(results_path)
    done = read_kernel_results(path)
    todo = [k for k in dict.fromkeys(kernels) if k.key not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    total, finished = len(kernels), len(kernels) - len(todo)
    with path.open("a") as fh:
        for start in range(0, len(todo), chunk):
            items = []
            for k in todo[start : start + chunk]:
                module, shape = k.module()
                items.append((k.key, module, shape))
            for key, stats in measure_modules(items, settings):
                done[key] = float(stats["median"])
                fh.write(json.dumps({"kernel": key, "median_ms": done[key]}) + "\n")
                fh.flush()
                finished += 1
                if progress:
                    progress(finished, total)
    return done


def measure_adaptively(kernels: Sequence[Kernel], results_path: str | os.PathLike[str], settings: Any,
                       rounds: int = 1, seed: int = 0, log: Callable[[str], None] | None = None,
                       worst: float = 0.1, copies: int = 3, trees: int = 300) -> tuple[list[Kernel], dict[str, float]]:
    """Measure ``kernels``, then ``rounds`` times sample more around the worst-predicted ones (nn-Meter's
    adaptive, fine-grained sampling): the ``worst`` share of kernels by out-of-fold relative error each get
    ``copies`` perturbed neighbours (sizes scaled by 0.8-1.25), which are measured too."""
    from edgenas.hardware.kernels import sample_kernels

    say = log or (lambda s: None)
    kernels = list(dict.fromkeys(kernels))

    def progress(d: int, t: int) -> None:
        if d % 100 == 0 or d == t:
            say(f"kernels: {d}/{t}")

    results = profile_kernels(kernels, results_path, settings, progress=progress)
    for r in range(rounds):
        measured = [results[k.key] for k in kernels]
        errors = KernelPredictor(n_estimators=trees, seed=seed).out_of_fold_errors(kernels, measured, seed=seed + r)
        order = np.argsort(-np.abs(errors))[: max(1, int(len(kernels) * worst))]
        around = sample_kernels([kernels[i] for i in order], copies, seed + 101 + r, scales=(0.8, 0.9, 1.1, 1.25))
        new = [k for k in around if k.key not in results]
        say(f"adaptive round {r + 1}: median out-of-fold error {100 * np.median(np.abs(errors)):.1f}%, "
            f"{len(new)} kernels sampled around the worst {len(order)}")
        results = profile_kernels(kernels + new, results_path, settings, progress=progress)
        kernels += new
    return kernels, results


def read_kernel_results(path: str | os.PathLike[str]) -> dict[str, float]:
    """Kernel key -> median ms from a JSONL results file (lines that do not parse are skipped: a kill may
    have cut the last one)."""
    out: dict[str, float] = {}
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
            out[str(row["kernel"])] = float(row["median_ms"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def network_kernels(space: Any, archs: Sequence[Mapping[str, Any]], num_classes: int = 10,
                    in_channels: int = 3) -> list[list[Kernel]]:
    return [kernels_of_arch(space, a, num_classes, in_channels) for a in archs]


# ---------------------------------------------------------------------------------------- workflows
def random_archs(space: Any, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [space.validate(space.sample(rng)) for _ in range(n)]


def build_kernel_predictor(spaces: Sequence[Any], out: str | os.PathLike[str], settings: Any, networks: int = 10,
                           variants: int = 1, calibrate: int = 10, seed: int = 0, num_classes: int = 10,
                           in_channels: int = 3, random_per_type: int = 100, adaptive: int = 1,
                           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Sample, measure and fit a kernel predictor for this machine; write it to ``out``.

    The kernels of ``networks`` random architectures of each space (the prior) and ``variants`` perturbed
    copies of each, and ``random_per_type`` kernels per type drawn across the prior's ranges, are measured
    alone (``OUT.kernels.jsonl``, resumable), then ``adaptive`` rounds of :func:`measure_adaptively`;
    ``calibrate`` other random
    networks of each space are measured whole (``OUT.networks/``, :class:`LatencyMeter`'s cache) for the
    calibration. Returns a summary (kernel counts per type, the calibration and its fit error).
    """
    from edgenas.hardware.kernels import sample_kernels
    from edgenas.hardware.measure import LatencyMeter

    say = log or (lambda s: None)
    out = Path(out)
    prior: list[Kernel] = []
    for i, space in enumerate(spaces):
        for arch in random_archs(space, networks, seed + 1000 * i):
            prior += kernels_of_arch(space, arch, num_classes, in_channels)
    kernels = sample_kernels(prior, variants, seed, random_per_type=random_per_type)
    say(f"{len(kernels)} distinct kernels to measure ({len(set(prior))} from {networks} networks per space)")
    kernels, results = measure_adaptively(kernels, out.with_name(out.name + ".kernels.jsonl"), settings,
                                          adaptive, seed, say)
    pred = KernelPredictor(seed=seed)
    pred.backend, pred.threads = settings.backend, settings.threads
    pred.fit(kernels, [results[k.key] for k in kernels])
    nets: list[list[Kernel]] = []
    measured: list[float] = []
    for i, space in enumerate(spaces):
        meter = LatencyMeter(space, num_classes, in_channels, _whole_network_settings(settings),
                             cache_dir=out.with_name(out.name + ".networks") / space.name)
        for arch in random_archs(space, calibrate, seed + 1000 * i + 500):
            nets.append(kernels_of_arch(space, arch, num_classes, in_channels))
            measured.append(meter(arch))
        say(f"calibration networks of {space.name}: {calibrate} measured")
    cal = pred.calibrate(nets, measured)
    pred.save(out)
    return {"kernels": len(kernels), "per_type": pred.counts, "calibration": vars(cal),
            "spaces": [s.name for s in spaces]}


def _whole_network_settings(settings: Any) -> Any:
    from dataclasses import replace

    return replace(settings, drift_correction=False)


def evaluate_on_space(pred: KernelPredictor, space: Any, n: int, settings: Any, seed: int = 12345,
                      num_classes: int = 10, in_channels: int = 3, cache_dir: str | os.PathLike[str] | None = None,
                      ) -> dict[str, Any]:
    """Measure ``n`` random networks of ``space`` whole and compare the predictor's latencies with them."""
    from scipy.stats import spearmanr

    from edgenas.hardware.measure import LatencyMeter

    meter = LatencyMeter(space, num_classes, in_channels, _whole_network_settings(settings), cache_dir=cache_dir)
    archs = random_archs(space, n, seed)
    kernels = network_kernels(space, archs, num_classes, in_channels)
    constant = sum(1 for ks in kernels if not ks)  # the runtime folds the whole network to a constant
    archs = [a for a, ks in zip(archs, kernels, strict=True) if ks]
    kernels = [ks for ks in kernels if ks]
    measured = np.array([meter(a) for a in archs])
    predicted = np.array([pred.predict_network(ks) for ks in kernels])
    err = predicted / measured - 1
    return {"space": space.name, "networks": len(archs), "constant_networks_left_out": constant,
            "mape_pct": float(np.mean(np.abs(err)) * 100), "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
            "spearman": float(spearmanr(predicted, measured)[0]),
            "measured_ms": measured.tolist(), "predicted_ms": predicted.tolist(),
            "raw_sum_ms": [pred.raw_sum(ks) for ks in kernels], "kernels": [len(ks) for ks in kernels]}
