"""Export a searched architecture as a deployable ONNX model, checked against PyTorch.

The trial's trained weights are reused when the search kept them (``OUT/weights``); otherwise the
architecture is trained from scratch with the search's recipe. The ONNX graph (opset 17) is run with
onnxruntime on validation images and must match PyTorch within ``tolerance`` (max absolute difference).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgenas.data import load_dataset
from edgenas.errors import EdgenasError
from edgenas.estimators.train import TrainEstimator, evaluate_accuracy, weights_file
from edgenas.experiment import ExperimentConfig
from edgenas.hardware.measure import export_onnx
from edgenas.io import atomic_write_json
from edgenas.spaces import get_space
from edgenas.store import TrialRecord, TrialStore, best_record


@dataclass
class ExportResult:
    onnx_path: Path
    trial: int
    arch: dict[str, Any]
    accuracy: float
    max_abs_diff: float
    reused_weights: bool


def select_trial(out: str | Path, trial: str | int = "best") -> TrialRecord:
    """The record of ``trial`` (a number, or ``best``: the most accurate feasible trial)."""
    config = ExperimentConfig.load(out)
    records = TrialStore.open(out).records()
    if not records:
        raise EdgenasError(f"'{out}' has no finished trials to export")
    if str(trial) == "best":
        metric = "accuracy" if "accuracy" in config.objectives else config.objectives[0]
        best = best_record(records, metric, "maximize" if metric == "accuracy" else "minimize")
        if best is None:
            raise EdgenasError(f"'{out}' has no feasible trial; export one by number with --trial N")
        return best
    try:
        number = int(trial)
    except ValueError:
        raise EdgenasError(f"--trial must be 'best' or a trial number, got '{trial}'") from None
    for r in records:
        if r.number == number:
            return r
    raise EdgenasError(f"trial {number} is not in '{out}' (trials: {records[0].number}..{records[-1].number})")


def export_trial(
    out: str | Path, trial: str | int = "best", onnx_path: str | Path | None = None, tolerance: float = 1e-4
) -> ExportResult:
    """Build (and train, unless weights were kept) a trial's network, export it to ONNX and verify it."""
    import onnxruntime as ort

    out = Path(out)
    config = ExperimentConfig.load(out)
    record = select_trial(out, trial)
    space = get_space(config.space)
    data = load_dataset(config.data)
    if config.max_train:
        data = data.subset(config.max_train)
    estimator = TrainEstimator(space, data, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
    wfile = weights_file(out / "weights", space, record.arch)
    reused = wfile.exists()
    if reused:
        model = space.build(record.arch, data.num_classes, data.in_channels, seed=config.seed)
        model.load_state_dict(torch.load(wfile, map_location="cpu", weights_only=True))
        model.eval()
        _, x_val = data.at_resolution(space.resolution(record.arch))
        accuracy = evaluate_accuracy(model, x_val, data.y_val)
    else:
        model, accuracy = estimator.fit(record.arch)
    resolution = space.resolution(record.arch)
    onnx_path = Path(onnx_path) if onnx_path else out / f"trial{record.number}.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
    export_onnx(model, tmp, resolution, data.in_channels)
    tmp.replace(onnx_path)
    _, x_val = data.at_resolution(resolution)
    x = x_val[:16].contiguous()
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i : i + 1].numpy()})[0] for i in range(len(x))])
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        raise EdgenasError(f"onnxruntime output differs from PyTorch by {diff:.2e} (> {tolerance:g}); "
                           f"the exported model at {onnx_path} is not trustworthy")
    atomic_write_json(onnx_path.with_suffix(".json"), {
        "trial": record.number, "space": config.space, "arch": record.arch, "metrics": record.metrics,
        "accuracy_of_exported_weights": accuracy, "input": [1, data.in_channels, resolution, resolution],
        "input_name": "input", "output_name": "logits", "onnxruntime_max_abs_diff": diff,
        "reused_search_weights": reused, "data": config.data,
    })
    return ExportResult(onnx_path, record.number, record.arch, accuracy, diff, reused)


def load_arch_json(path: str | Path) -> dict[str, Any]:
    """Read an architecture from a JSON file (a mapping, or an exported model's ``.json`` with ``arch``)."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgenasError(f"architecture file '{path}' does not exist") from None
    except json.JSONDecodeError as exc:
        raise EdgenasError(f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return obj["arch"] if isinstance(obj, dict) and "arch" in obj else obj
