"""Specialise a trained OFA supernet for several devices: accuracy predictor + latency model + evolution.

Once-for-All (Cai et al., ICLR 2020), section 3.4 and figure 1 ("train once, specialise everywhere"):

1. measure (subnet, accuracy) pairs on the supernet -- each subnet extracted, its BN statistics
   recalibrated on training images, evaluated on validation images -- and fit an
   :class:`~edgenas.estimators.accuracy_predictor.AccuracyPredictor` (kept beside the supernet);
2. per target (``cpu``, ``lut:PATH``, ``predictor:PATH``, a named device), run the vectorised evolutionary
   finder of :mod:`edgenas.search.ofa_evolution` under that target's latency budget;
3. extract, recalibrate, evaluate and export (ONNX) each found subnet; for ``cpu`` the found subnet is
   measured, and if it misses the budget the search repeats with a proportionally tighter budget;
4. the cross table: every found subnet's latency on every target and its accuracy, so that each
   device's preference for its own subnet is visible.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgenas.data import Dataset
from edgenas.errors import EdgenasError
from edgenas.estimators.accuracy_predictor import AccuracyPredictor, GeneCodec
from edgenas.estimators.train import accuracy_of, top1_hits
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.spaces.base import Arch
from edgenas.supernets.bn_calibration import recalibrate_bn
from edgenas.supernets.ofa import OFAMobileNetV3


def recal_images(data: Dataset, resolution: int, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded sample of ``n`` training images at ``resolution`` for BN recalibration."""
    x, _ = data.at_resolution(resolution)
    idx = np.random.default_rng(seed).choice(len(x), min(n, len(x)), replace=False)
    return x[torch.from_numpy(np.sort(idx))]


@torch.no_grad()
def evaluate_subnet(net: OFAMobileNetV3, arch: Arch, data: Dataset, recal: int = 1000, val: int | None = None,
                    seed: int = 0) -> tuple[torch.nn.Module, float]:
    """Extract ``arch``, recalibrate its BN statistics on ``recal`` training images and return the model
    and its top-1 accuracy (%) on the first ``val`` validation images (all by default)."""
    model, hits = subnet_hits(net, arch, data, recal, val, seed)
    return model, accuracy_of(hits)


@torch.no_grad()
def subnet_hits(net: OFAMobileNetV3, arch: Arch, data: Dataset, recal: int = 1000, val: int | None = None,
                seed: int = 0) -> tuple[torch.nn.Module, np.ndarray]:
    """:func:`evaluate_subnet` with, instead of the accuracy, which validation images the subnet gets
    right (booleans, in order): what measurement-noise estimates need
    (:mod:`edgenas.estimators.measurement_noise`)."""
    arch = net.space.validate(arch)
    res = net.space.resolution(arch)
    model = net.extract(arch).to(memory_format=torch.channels_last)
    recalibrate_bn(model, recal_images(data, res, recal, seed).contiguous(memory_format=torch.channels_last))
    _, x_val = data.at_resolution(res)
    n = len(x_val) if val is None else min(val, len(x_val))
    hits = top1_hits(model, x_val[:n].contiguous(memory_format=torch.channels_last), data.y_val[:n])
    return model.to(memory_format=torch.contiguous_format), hits


def pack_hits(hits: np.ndarray) -> str:
    """Booleans -> a hex string (8 per byte), for one JSON line per measured subnet."""
    return np.packbits(np.asarray(hits, dtype=bool)).tobytes().hex()


def unpack_hits(text: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack_hits` for ``n`` booleans."""
    raw = bytes.fromhex(text)
    if len(raw) != (n + 7) // 8:
        raise EdgenasError(f"per-image results of {8 * len(raw)} bits cannot hold {n} images")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)


def measure_pairs(net: OFAMobileNetV3, data: Dataset, n: int, seed: int = 0, recal: int = 500,
                  val: int | None = None, cache: Path | None = None,
                  progress: Callable[[str], None] | None = None, shard: tuple[int, int] = (0, 1),
                  extra_caches: Sequence[Path] = (), keep_hits: bool = False) -> tuple[list[Arch], list[float]]:
    """``n`` seeded random subnets and their recalibrated accuracies; with ``cache`` (JSONL) every pair
    is appended as it is measured and re-used on the next call (resumable). ``shard=(i, k)`` measures only
    every k-th subnet from the i-th (for processes working side by side, each with its own cache; the
    pairs returned are then that share); ``extra_caches`` are further JSONL files to re-use pairs from.
    ``keep_hits``: the cache also keeps which validation images each subnet gets right (read them with
    :func:`cached_hits`); cached pairs without them are measured again."""
    rng = np.random.default_rng(seed)
    archs = [net.space.sample(rng) for _ in range(n)]
    i_shard, n_shards = shard
    archs = archs[i_shard::n_shards]
    have: dict[str, float] = {}
    for path in [*extra_caches, *([cache] if cache is not None else [])]:
        for row in _cache_rows(path):
            if not keep_hits or "hits" in row:
                have[net.space.key(row["arch"])] = float(row["accuracy"])
    accs, t0 = [], time.time()
    for i, arch in enumerate(archs):
        key = net.space.key(arch)
        if key not in have:
            _, hits = subnet_hits(net, arch, data, recal, val, seed)
            have[key] = accuracy_of(hits)
            if cache is not None:
                row = {"arch": arch, "accuracy": have[key],
                       **({"images": len(hits), "hits": pack_hits(hits)} if keep_hits else {})}
                cache.parent.mkdir(parents=True, exist_ok=True)
                with open(cache, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
        accs.append(have[key])
        if progress and ((i + 1) % 25 == 0 or i + 1 == len(archs)):
            progress(f"accuracy pairs: {i + 1}/{len(archs)} ({time.time() - t0:.0f} s)")
    return archs, accs


def cached_hits(net: OFAMobileNetV3, archs: Sequence[Arch], n_images: int,
                caches: Sequence[Path]) -> np.ndarray | None:
    """``(len(archs), n_images)`` booleans kept by :func:`measure_pairs` (``keep_hits``) for ``archs``;
    ``None`` when any of them has none on ``n_images`` validation images."""
    found: dict[str, np.ndarray] = {}
    for path in caches:
        for row in _cache_rows(path):
            if "hits" in row and row.get("images") == n_images:
                found[net.space.key(row["arch"])] = unpack_hits(row["hits"], n_images)
    keys = [net.space.key(a) for a in archs]
    if not all(k in found for k in keys):
        return None
    return np.stack([found[k] for k in keys])


def _cache_rows(path: Path) -> list[dict[str, Any]]:
    """The readable rows of a pairs cache (JSONL; a torn last line from an interruption is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and {"arch", "accuracy"} <= row.keys():
            rows.append(row)
    return rows


def table_coverage(evaluator: Any, codec: GeneCodec) -> dict[str, list[int]] | None:
    """For a layer-table target: the resolutions and widths its entries cover (choice indices)."""
    from edgenas.hardware.targets import LutLatency

    if not isinstance(evaluator, LutLatency):
        return None
    model = evaluator.model
    L = model.layers
    ok_r, ok_w = set(), set()
    for ri in range(len(L.resolutions)):
        for wi in range(len(L.widths)):
            ids = np.concatenate([L.fixed[ri, wi].ravel(), L.block[ri, wi].ravel()])
            if np.isfinite(model.values[ri, ids]).all():
                ok_r.add(ri)
                ok_w.add(wi)
    if not ok_r:
        raise EdgenasError(f"latency table {model.table.source} covers no network of space "
                           f"'{codec.space.name}'; it was built for {model.table.built_for()}")
    return {"resolution": sorted(ok_r), "width": sorted(ok_w)}


@dataclass
class SpecializeResult:
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    cross: dict[str, dict[str, float]] = field(default_factory=dict)
    markdown: str = ""


def specialize(net: OFAMobileNetV3, data: Dataset, data_spec: str, targets: Sequence[str],
               budgets: Sequence[float], out: str | Path, predictor: AccuracyPredictor | None = None,
               pairs: int = 300, recal: int = 500, val: int | None = None, generations: int = 500,
               population: int = 100, seed: int = 0, surrogate_points: int = 10, export: bool = True,
               progress: Callable[[str], None] | None = None) -> SpecializeResult:
    """Find, per target, the most accurate subnet within its latency budget (see the module docstring)."""
    from edgenas.evaluators import EvalContext, make_target
    from edgenas.hardware.measure import export_onnx
    from edgenas.search.ofa_evolution import EvolutionConfig, batched_latency, evolve

    if len(targets) != len(budgets):
        raise EdgenasError(f"{len(targets)} targets but {len(budgets)} latency budgets; give one budget per target")
    say = progress or (lambda msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space, codec = net.space, GeneCodec(net.space)
    if predictor is None:
        archs, accs = measure_pairs(net, data, pairs, seed, recal, val, out / "accuracy_pairs.jsonl", say)
        predictor = AccuracyPredictor(space, random_state=seed).fit(archs, accs)
        predictor.save(out / "accuracy_predictor.npz")
    ctx = EvalContext(space, data_spec=data_spec, seed=seed, cache_dir=str(out / "cache"))
    ctx.__dict__["data"] = data  # already loaded
    evaluators, lat_fns = {}, {}
    for spec in targets:  # build every target first: a bad spec fails before any search runs
        evaluators[spec] = make_target(spec, ctx)
    rows: list[dict[str, Any]] = []
    for spec, budget in zip(targets, budgets, strict=True):
        ev = evaluators[spec]
        lat_fn, how = batched_latency(ev, codec, data.num_classes, data.in_channels, surrogate_points, seed)
        lat_fns[spec] = lat_fn
        allowed = table_coverage(ev, codec)
        search_budget, tries = float(budget), []
        for attempt in range(4):
            res = evolve(codec, predictor.predict_genes, lat_fn, search_budget,
                         EvolutionConfig(population=population, generations=generations, seed=seed + attempt),
                         target_name=spec, allowed=allowed)
            arch = codec.to_archs(res.genes[None, :])[0]
            measured = float(ev(arch)) if how == "surrogate" else None
            tries.append({"search_budget": search_budget, "model_latency": res.latency, "measured": measured})
            if measured is None or measured <= budget:
                break
            search_budget *= 0.97 * budget / measured  # the surrogate was optimistic here: tighten and retry
        model, acc = evaluate_subnet(net, arch, data, recal, None, seed)
        model = model.cpu()  # exported and saved from the CPU, wherever the supernet runs
        row = {"target": spec, "budget_ms": float(budget), "latency_model": how, "arch": arch,
               "predicted_accuracy": res.accuracy, "accuracy": acc, "latency_ms": measured or res.latency,
               "meets_budget": (measured or res.latency) <= budget, "search_seconds": res.seconds,
               "candidates": res.candidates, "candidates_per_second": res.candidates_per_second,
               "fallback_children": res.fallbacks, "tries": tries}
        if export:
            name = "".join(c if c.isalnum() else "_" for c in spec).strip("_")
            onnx_path = out / f"subnet_{name}.onnx"
            export_onnx(model, onnx_path, space.resolution(arch), data.in_channels)
            row["onnxruntime_max_abs_diff"] = _check_onnx(model.eval(), onnx_path, data, space.resolution(arch))
            torch.save(model.state_dict(), out / f"subnet_{name}.pt")
            atomic_write_json(out / f"subnet_{name}.json", {k: v for k, v in row.items()})
            row["onnx"] = str(onnx_path)
        rows.append(row)
        say(f"{spec}: accuracy {acc:.2f}% (predicted {res.accuracy:.2f}%), latency {row['latency_ms']:.3f} ms "
            f"<= {budget:g} ms: {row['meets_budget']}; {res.candidates_per_second:,.0f} candidates/s")
    # cross table: every found subnet on every target
    cross: dict[str, dict[str, float]] = {}
    for row in rows:
        cross[row["target"]] = {}
        for spec in targets:
            ev = evaluators[spec]
            from edgenas.hardware.cost import MeasuredLatency

            if isinstance(ev, MeasuredLatency):
                lat = float(ev(row["arch"]))
            else:
                try:
                    lat = float(lat_fns[spec](codec.to_genes([row["arch"]]))[0])
                except EdgenasError:
                    lat = float("nan")  # the table does not cover this subnet (another resolution / width)
            cross[row["target"]][spec] = lat
    md = _markdown(rows, cross, targets)
    atomic_write_text(out / "report.md", md)
    atomic_write_json(out / "report.json", {"targets": list(targets), "budgets_ms": list(budgets),
                                            "rows": rows, "cross_latency_ms": cross})
    return SpecializeResult(out, rows, cross, md)


def _check_onnx(model: torch.nn.Module, path: Path, data: Dataset, resolution: int) -> float:
    """Largest difference between onnxruntime's and PyTorch's outputs on a few validation images."""
    import onnxruntime as ort

    _, x_val = data.at_resolution(resolution)
    x = x_val[:4].cpu().contiguous()
    with torch.no_grad():
        expected = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i : i + 1].numpy()})[0] for i in range(len(x))])
    diff = float(np.abs(got - expected).max())
    if not diff <= 1e-3:
        raise EdgenasError(f"onnxruntime output of {path} differs from PyTorch by {diff:.2e}; not trustworthy")
    return diff


def _markdown(rows: list[dict[str, Any]], cross: dict[str, dict[str, float]], targets: Sequence[str]) -> str:
    head = "| subnet found for | accuracy (%) | " + " | ".join(f"{t} (ms)" for t in targets) + " |"
    lines = [head, "|" + "---|" * (2 + len(targets))]
    for row in rows:
        cells = []
        for t in targets:
            v = cross[row["target"]][t]
            budget = next(r["budget_ms"] for r in rows if r["target"] == t)
            mark = "" if not np.isfinite(v) else (" ✓" if v <= budget else " ✗")
            cells.append(("n/a" if not np.isfinite(v) else f"{v:.3f}") + mark)
        lines.append(f"| {row['target']} (≤ {row['budget_ms']:g} ms) | {row['accuracy']:.2f} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"
