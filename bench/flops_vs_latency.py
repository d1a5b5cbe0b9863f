"""Do FLOPs predict latency? Rank correlation between FLOPs and measured latency, per device.

- this CPU: the ``mbv3-tiny`` architectures measured by ``bench/latency_fidelity.py measure`` (each in a
  fresh process, onnxruntime, 1 thread; >= 200 archs), FLOPs from the analytic layer index (equal to
  PyTorch's flop counter, see tests/test_hw_layers.py);
- the shared OFA MobileNetV3 GPU latencies (titan_rtx_1, v100_1, titan_xp_1; 5,000 archs), FLOPs of the
  width-1.0, 1000-class network at each arch's resolution;
- every device column of the shared NB201 latency table (15,625 archs), FLOPs of the NB201 CIFAR-10
  network from the NB201 builder and PyTorch's flop counter: the counter is run on the all-``none``
  network and on one network per (edge, op); every edge op exists in every cell, so a network's MACs
  are the base plus its edges' increments (checked exactly against the counter on random networks).

Kendall's tau-b and Spearman's rho are reported; HELP's figures (Lee et al., NeurIPS 2021, quoted in
``../shared/data/README.md``, the coefficient not named there) are listed beside them.

    EDGENAS_DATA=../shared/data python bench/flops_vs_latency.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgenas.hardware.layers import MBV3Layers  # noqa: E402
from edgenas.io import atomic_write_json, machine_info  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402

RESULTS = ROOT / "bench" / "results"
HELP_FIGURES = {  # FLOPs-vs-latency rank correlation on NB201 quoted from HELP
    "titan_rtx_1": ("Titan RTX, batch 256", 0.95), "gold_6226": ("Xeon Gold 6226", 0.83),
    "pixel3": ("Pixel 2 (HELP) vs Pixel 3 here", 0.77), "raspi4": ("Raspberry Pi 4", 0.85),
    "eyeriss": ("Eyeriss", 0.44), "fpga": ("FPGA", 0.90),
}


def corr(flops: np.ndarray, lat: np.ndarray) -> dict[str, float]:
    return {"n": int(len(lat)), "kendall_tau_b": float(kendalltau(flops, lat).statistic),
            "spearman": float(spearmanr(flops, lat).statistic), "distinct_flops": int(len(np.unique(flops)))}


def nb201_macs(space) -> np.ndarray:
    """MACs of all 15,625 NB201 networks (see the module docstring), indexed by arch code."""
    from edgenas.hardware.flops import count_macs
    from edgenas.spaces.nb201 import EDGES, OPS

    def macs(arch) -> int:
        return count_macs(space.build(arch, 10, 3), 32, 3)

    names = space.names
    base_arch = {n: "none" for n in names}
    base = macs(base_arch)
    delta = np.zeros((len(EDGES), len(OPS)))
    for e, name in enumerate(names):
        for k, op in enumerate(OPS):
            if op != "none":
                delta[e, k] = macs({**base_arch, name: op}) - base
    codes = np.arange(len(OPS) ** len(EDGES))
    ops = space.op_indices(codes)  # (n, 6) op index per edge, in the order of space.names
    total = base + delta[np.arange(len(EDGES))[None, :], ops].sum(axis=1)
    rng = np.random.default_rng(0)
    for c in rng.choice(codes, 12, replace=False):  # the additivity holds exactly
        assert macs(space.from_code(int(c))) == total[c], "NB201 MACs are not additive over edges"
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-data", default=os.environ.get("EDGENAS_DATA"))
    ap.add_argument("--cpu-data", default=str(RESULTS / "cpu_mbv3_tiny_latency.jsonl"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out: dict = {"benchmark": "flops_vs_latency", "command": " ".join(["python", *sys.argv]),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), "flops": "MACs x 2",
                 "results": {}}
    res = out["results"]
    plots = {}
    # ---- this CPU
    cpu = Path(args.cpu_data)
    if cpu.exists():
        rows = [json.loads(line) for line in cpu.read_text().splitlines() if line.strip()]
        space = get_space("mbv3-tiny")
        layers = MBV3Layers(space, 10)
        archs = [r["arch"] for r in rows]
        flops = 2 * layers.sum(layers.layer_macs, layers.batch_layer_ids(archs))
        lat = np.array([r["latency_ms"] for r in rows])
        res["this_cpu/mbv3-tiny (onnxruntime, 1 thread)"] = {
            **corr(flops, lat), "median_loadavg_during_measurement": float(np.median([r["loadavg"] for r in rows]))}
        plots["this CPU, mbv3-tiny"] = (flops, lat)
    else:
        print(f"no CPU measurements at {cpu}; run bench/latency_fidelity.py measure first", file=sys.stderr)
    if not args.bench_data:
        sys.exit("reference data not found: pass --bench-data PATH or set EDGENAS_DATA (e.g. ../shared/data)")
    data = Path(args.bench_data)
    # ---- OFA GPU data
    full = get_space("mbv3")
    recs = [json.loads(line) for line in (data / "ofa_mbv3" / "ofa_mbv3_gpu_latency_ms.jsonl").read_text().splitlines()]
    archs = [full.from_ofa(r) for r in recs]
    layers = MBV3Layers(full, 1000)
    flops = 2 * layers.sum(layers.layer_macs, layers.batch_layer_ids(archs))
    for dev in ("titan_rtx_1", "v100_1", "titan_xp_1"):
        lat = np.array([r["latency_ms"][dev] for r in recs])
        res[f"ofa_mbv3/{dev}"] = corr(flops, lat)
    plots["OFA MobileNetV3, titan_rtx_1"] = (flops, np.array([r["latency_ms"]["titan_rtx_1"] for r in recs]))
    # ---- NB201 device columns
    from edgenas.benchmarks.nb201_table import load_nb201

    nb = get_space("nb201")
    table = load_nb201(data)
    flops = 2 * nb201_macs(nb)
    for dev in table.devices:
        lat = np.asarray(table.latency_of(dev))
        row = corr(flops, lat)
        if dev in HELP_FIGURES:
            row["help"] = {"device": HELP_FIGURES[dev][0], "rank_correlation": HELP_FIGURES[dev][1]}
        res[f"nb201/{dev}"] = row
        if dev in ("raspi4", "eyeriss", "fpga"):
            plots[f"NB201, {dev}"] = (flops, lat)
    print(f"{'device':48s} {'n':>6s} {'Kendall':>8s} {'Spearman':>9s}   HELP")
    for name, r in res.items():
        h = r.get("help")
        hs = f"{h['rank_correlation']:.2f} ({h['device']})" if h else ""
        print(f"{name:48s} {r['n']:6d} {r['kendall_tau_b']:8.3f} {r['spearman']:9.3f}   {hs}")
    _plot(plots, RESULTS / "flops_vs_latency.png")
    out["plot"] = "bench/results/flops_vs_latency.png"
    atomic_write_json(RESULTS / "flops_vs_latency.json", out)


def _plot(plots: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(3.6 * len(plots), 3.4))
    for ax, (name, (f, lat)) in zip(np.atleast_1d(axes), plots.items(), strict=True):
        ax.scatter(f / 1e6, lat, s=3, alpha=0.3)
        ax.set_title(f"{name}\nKendall {kendalltau(f, lat).statistic:.2f}", fontsize=9)
        ax.set_xlabel("MFLOPs")
        ax.set_ylabel("latency (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
