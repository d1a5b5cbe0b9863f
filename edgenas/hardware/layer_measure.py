"""Time single layers (or any small ``nn.Module``) in fresh worker processes, streaming the results.

This extends the protocol of :mod:`edgenas.hardware.measure` (fixed threads, the stable allocator,
warm-up, many timed runs, one candidate at a time) from whole networks to the thousand-odd layers of a
latency table. One fresh process per layer would cost about a second of start-up each, so a worker
process times a *group* of layers one after the other and prints one JSON line per layer as it finishes;
the caller stores each line at once, so a killed profile keeps everything measured before the kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.hardware.layers import Layer
from edgenas.hardware.measure import MeasureSettings, export_onnx, worker_env


@dataclass(frozen=True)
class LayerTiming:
    """Per-layer timing settings: fewer runs than a whole network, since a layer takes microseconds."""

    warmup: int = 10
    runs: int = 50
    min_seconds: float = 0.1


def build_layer(layer: Layer, divisor: int = 8) -> Any:
    """The ``torch.nn.Module`` of one layer, made of the same blocks the MBV3 builder uses."""
    import torch
    from torch import nn

    from edgenas.models.blocks import ConvBNAct, MBConv, init_weights

    class PoolMix(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.mix = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.Hardswish())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mix(x.mean((2, 3), keepdim=True))

    class Classifier(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.fc = nn.Linear(cin, cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    if layer.op == "conv":
        module: nn.Module = ConvBNAct(layer.cin, layer.cout, layer.kernel, layer.stride, act=layer.act)
    elif layer.op == "mbconv":
        module = MBConv(layer.cin, layer.cout, layer.kernel, layer.expand, layer.stride, layer.act, layer.se, divisor)
        if module.hidden != layer.hidden or module.residual != layer.residual:
            raise EdgenasError(f"layer {layer.key}: divisor {divisor} gives {module.hidden} hidden channels")
    elif layer.op == "pool_mix":
        module = PoolMix(layer.cin, layer.cout)
    elif layer.op == "linear":
        module = Classifier(layer.cin, layer.cout)
    else:
        raise EdgenasError(f"unknown layer op '{layer.op}'")
    init_weights(module)
    return module.eval()


def layer_input_shape(layer: Layer, batch: int = 1) -> tuple[int, ...]:
    if layer.op == "linear":
        return (batch, layer.cin, 1, 1)
    return (batch, layer.cin, layer.size, layer.size)


def measure_layers(
    layers: Sequence[Layer],
    settings: MeasureSettings,
    divisor: int = 8,
    timing: LayerTiming | None = None,
    on_result: Callable[[str, dict[str, float]], None] | None = None,
) -> Iterator[tuple[str, dict[str, float]]]:
    """Time MBV3 layers one after the other in one fresh worker process, keyed by ``layer.key``.

    onnxruntime: each layer is exported to ONNX here and run by the worker; torch: the worker builds the
    same eager module itself (as the network-level torch backend does)."""
    items = [(lay.key, lay, layer_input_shape(lay, settings.batch)) for lay in layers]
    yield from measure_modules(items, settings, timing, on_result, divisor)


def measure_modules(
    items: Sequence[tuple[str, Any, tuple[int, ...]]],
    settings: MeasureSettings,
    timing: LayerTiming | None = None,
    on_result: Callable[[str, dict[str, float]], None] | None = None,
    divisor: int = 8,
) -> Iterator[tuple[str, dict[str, float]]]:
    """Time ``(name, module, input_shape)`` items one after the other in one fresh worker process.

    A module may be a :class:`Layer` (built by :func:`build_layer`). With the torch backend a Layer runs
    eagerly in the worker; any other module is passed as TorchScript (``torch.jit.trace``), the one
    safe, pickle-free way to hand a module to another process.

    Yields ``(name, stats)`` as each finishes (``stats``: median, mean, std, min in ms and the count of
    timed runs) and calls ``on_result`` with the same, so a caller can store it before the next one.
    A worker that dies raises ``RuntimeError`` after everything it finished has been yielded.
    """
    timing = timing or LayerTiming()
    with tempfile.TemporaryDirectory(prefix="edgenas-layers-") as tmp:
        jobs = []
        for i, (name, module, shape) in enumerate(items):
            job: dict[str, Any] = {"name": name, "shape": list(shape)}
            if settings.backend == "onnxruntime":
                job["onnx_path"] = os.path.join(tmp, f"layer{i}.onnx")
                _export(build_layer(module, divisor) if isinstance(module, Layer) else module, job["onnx_path"], shape)
            elif isinstance(module, Layer):
                job["layer"], job["divisor"] = asdict(module), divisor
            else:
                job["module_path"] = os.path.join(tmp, f"layer{i}.pt")
                _save_torchscript(module, job["module_path"], shape)
            jobs.append(job)
        request = {
            "backend": settings.backend, "threads": settings.threads, "warmup": timing.warmup,
            "runs": timing.runs, "min_seconds": timing.min_seconds, "jobs": jobs,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgenas.hardware.layer_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=worker_env(settings.threads),
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request))
        proc.stdin.close()
        for line in proc.stdout:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            stats = {k: row[k] for k in ("median", "mean", "std", "min", "count")}
            if on_result:
                on_result(row["name"], stats)
            yield row["name"], stats
        err = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0:
            tail = err.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"layer measurement failed: {tail[0]}")


def measure_module(module: Any, input_shape: tuple[int, ...], settings: MeasureSettings | None = None,
                   timing: LayerTiming | None = None) -> dict[str, float]:
    """Time one module in a fresh process (see :func:`measure_modules`)."""
    settings = settings or MeasureSettings()
    for _, stats in measure_modules([("module", module, input_shape)], settings, timing):
        return stats
    raise RuntimeError("layer measurement returned nothing")


def _export(module: Any, path: str, shape: tuple[int, ...]) -> None:
    if len(shape) == 4:
        export_onnx(module, path, shape[2], shape[1], shape[0])
        return
    raise EdgenasError(f"cannot export a module with input shape {shape}")


def _save_torchscript(module: Any, path: str, shape: tuple[int, ...]) -> None:
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), torch.zeros(shape))
    traced.save(path)
