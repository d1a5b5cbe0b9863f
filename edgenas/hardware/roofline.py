"""The roofline model of a network on a device profile (Williams, Waterman and Patterson, CACM 2009).

For each operator: FLOPs, bytes moved (weights, activations read and written, at a precision),
arithmetic intensity = FLOPs / byte, attainable performance = min(peak, intensity x bandwidth), time
= FLOPs / attainable = max(FLOPs / peak, bytes / bandwidth), and whether it is compute- or
memory-bound. For the model: the totals, its intensity, the attained performance (FLOPs / summed time)
and the utilisation of the peak. OFA (Cai et al., ICLR 2020) used this view to show that networks
specialised for an FPGA have a higher arithmetic intensity and utilisation.

The summed time is a *lower bound* on latency (it assumes perfect overlap within an op and no
overheads); as a search target (a device profile without a table or predictor) it ranks networks by
their roofline cost, which is honest about being an estimate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgenas.evaluators import Evaluator
from edgenas.hardware.devices import DeviceProfile
from edgenas.hardware.graph import Op
from edgenas.hardware.memory import bytes_per_element
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.mbv3 import MBV3Space


@dataclass
class RooflinePoint:
    name: str
    kind: str
    flops: float
    bytes: float
    intensity: float
    attainable_gops: float
    time_ms: float
    bound: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def op_times_ms(flops: np.ndarray, nbytes: np.ndarray, peak_gops: float, bandwidth_gbs: float) -> np.ndarray:
    """max(FLOPs / peak, bytes / bandwidth), in ms."""
    return np.maximum(flops / (peak_gops * 1e9), nbytes / (bandwidth_gbs * 1e9)) * 1e3


def roofline(ops: Sequence[Op], device: DeviceProfile, precision: str | None = None) -> tuple[list[RooflinePoint],
                                                                                               dict[str, Any]]:
    """Per-op roofline points (ops that compute) and the model summary."""
    precision = precision or device.default_precision
    peak, bw, bpe = device.peak(precision), device.bandwidth(), bytes_per_element(precision)
    points: list[RooflinePoint] = []
    total_flops = total_bytes = total_time = 0.0
    for op in ops:
        if op.kind in ("input", "view"):
            continue
        nbytes = op.bytes(bpe)
        t = float(op_times_ms(np.array(op.flops, dtype=float), np.array(nbytes), peak, bw))
        total_flops += op.flops
        total_bytes += nbytes
        total_time += t
        if op.flops > 0:
            ai = op.flops / nbytes if nbytes else float("inf")
            att = min(peak, ai * bw)
            points.append(RooflinePoint(op.name, op.kind, float(op.flops), nbytes, ai, att, t,
                                        "compute" if ai * bw >= peak else "memory"))
    attained = total_flops / (total_time * 1e-3) / 1e9 if total_time else 0.0
    summary = {
        "device": device.name, "precision": precision, "peak_gops": peak, "bandwidth_gbs": bw,
        "ridge_intensity": peak / bw, "flops": total_flops, "bytes": total_bytes,
        "intensity": total_flops / total_bytes if total_bytes else float("inf"),
        "time_ms_lower_bound": total_time, "attained_gops": attained, "utilization": attained / peak,
        "memory_bound_ops": sum(p.bound == "memory" for p in points), "ops": len(points),
    }
    return points, summary


def arch_ops(space: SearchSpace, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3) -> list[Op]:
    """The operators of an architecture: analytic for MBV3 spaces, else from the built network's graph."""
    arch = space.validate(arch)
    if isinstance(space, MBV3Space):
        from edgenas.hardware.layers import MBV3Layers

        layers = MBV3Layers(space, num_classes, in_channels).arch_layers(arch)
        return [op for i, lay in enumerate(layers) for op in lay.ops(f"L{i}.{lay.op}.")]
    from edgenas.hardware.graph import graph_ops

    r = space.resolution(arch)
    return graph_ops(space.build(arch, num_classes, in_channels), (1, in_channels, r, r)).ops


def plot_roofline(points: Sequence[RooflinePoint], summary: Mapping[str, Any], path: str | os.PathLike[str],
                  title: str = "") -> None:
    """The roofline (log-log) with one point per op, coloured by kind, and the model's point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak, bw = summary["peak_gops"], summary["bandwidth_gbs"]
    ai = np.array([p.intensity for p in points])
    perf = np.array([p.attainable_gops for p in points])
    lo = max(min(ai.min(), summary["intensity"]) / 3, 1e-3) if len(ai) else 0.01
    hi = max(ai.max() if len(ai) else 1.0, summary["ridge_intensity"]) * 3
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    ax.loglog(x, np.minimum(peak, x * bw), color="k", lw=1.5, label=f"roofline: {peak:g} GOPS, {bw:g} GB/s")
    for kind, colour in (("conv", "tab:blue"), ("linear", "tab:purple"), ("pool", "tab:orange"),
                         ("eltwise", "tab:green")):
        sel = np.array([p.kind == kind for p in points])
        if sel.any():
            ax.scatter(ai[sel], perf[sel], s=14, alpha=0.7, color=colour, label=f"{kind} ({int(sel.sum())})")
    ax.scatter([summary["intensity"]], [summary["attained_gops"]], marker="*", s=160, color="tab:red",
               label=f"model: {summary['attained_gops']:.3g} GOPS ({summary['utilization'] * 100:.1f}% of peak)")
    ax.axvline(summary["ridge_intensity"], color="grey", ls=":", lw=1)
    ax.set_xlabel(f"arithmetic intensity (ops / byte, {summary['precision']})")
    ax.set_ylabel("attainable performance (GOPS)")
    ax.set_title(title or f"roofline on {summary['device']}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class RooflineLatency(Evaluator):
    """Latency lower bound (ms) from a device profile's peak compute and bandwidth (see the docstring).

    Instant and vectorised for MBV3 spaces (per-layer times summed with the layer index); other spaces
    trace each network's graph once (memoised)."""

    name, unit, direction = "latency", "ms", "minimize"
    cheap = True

    def __init__(self, space: SearchSpace, device: DeviceProfile, num_classes: int, in_channels: int = 3,
                 precision: str | None = None) -> None:
        self.space, self.device, self.num_classes, self.in_channels = space, device, num_classes, in_channels
        self.precision = precision or device.default_precision
        self.peak, self.bw = device.peak(self.precision), device.bandwidth()
        self.bpe = bytes_per_element(self.precision)
        self.layers = None
        self._memo: dict[str, float] = {}
        if isinstance(space, MBV3Space):
            from edgenas.hardware.layers import MBV3Layers

            self.layers = MBV3Layers(space, num_classes, in_channels)
            self.layer_ms = np.array([self._ops_ms(lay.ops()) for lay in self.layers.layers])
            self.instant = True

    def _ops_ms(self, ops: Sequence[Op]) -> float:
        f = np.array([o.flops for o in ops if o.kind not in ("input", "view")], dtype=float)
        b = np.array([o.bytes(self.bpe) for o in ops if o.kind not in ("input", "view")], dtype=float)
        return float(op_times_ms(f, b, self.peak, self.bw).sum())

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        if self.layers is None:
            return [self(a) for a in archs]
        return self.layers.sum(self.layer_ms, self.layers.batch_layer_ids(archs)).tolist()

    def __call__(self, arch: Mapping[str, Any]) -> float:
        if self.layers is not None:
            return self.evaluate_batch([arch])[0]
        key = self.space.key(arch)
        if key not in self._memo:
            self._memo[key] = self._ops_ms(arch_ops(self.space, arch, self.num_classes, self.in_channels))
        return self._memo[key]

    def describe(self) -> str:
        return (f"latency [ms] roofline lower bound on {self.device.name} ({self.precision}: {self.peak:g} GOPS, "
                f"{self.bw:g} GB/s)")
