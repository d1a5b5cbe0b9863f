"""Memory of one training step of the over-parameterised mbv3 network: binarized paths vs DARTS, N = 1..7.

ProxylessNAS's claim (Cai et al., ICLR 2019, section 3.2): with binarized paths only one path is active,
so the activation memory of a training step does not grow with the number of candidates N, while
DARTS's relaxation computes and keeps every path (O(N)). Each configuration runs in a fresh process:
build the network (mbv3-tiny, 32 px, batch 64, N candidates per block + the zero op where a stage may
drop a block), run one training step, and record

* **activation memory**: the bytes of the distinct tensors autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``; parameters excluded) -- exact and independent of the
  allocator;
* **peak RSS growth** of the process during the step (``ru_maxrss`` after minus before; includes
  gradients and temporaries; coarse, as the allocator sees it).

Steps: ``binary`` = a weight step with one path sampled per block (mean of 3 seeds), ``binary-worst``
= the same with the largest candidate forced in every block, ``binary-arch`` = an architecture step of
the two-path estimator (two paths per block), ``darts`` = the relaxed step (all paths). Candidate
order: ``large-first`` (k3e6, k5e6, k7e6, k3e4, k5e4, k7e4, k3e3) and ``small-first`` (the reverse),
so that both the worst case and the typical case are shown.

    python bench/proxyless_memory.py            # writes bench/results/proxyless_memory.json (+ .png)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORDERS = {
    "large-first": [(3, 6), (5, 6), (7, 6), (3, 4), (5, 4), (7, 4), (3, 3)],
    "small-first": [(3, 3), (7, 4), (5, 4), (3, 4), (7, 6), (5, 6), (3, 6)],
}
STEPS = ("binary", "binary-worst", "binary-arch", "darts")


def worker(step: str, order: str, n: int, batch: int, resolution: int) -> dict:
    import torch
    import torch.nn.functional as F

    from edgenas.spaces import get_space
    from edgenas.supernets.proxyless import ProxylessSupernet

    torch.set_num_threads(1)
    cands = ORDERS[order][:n]
    net = ProxylessSupernet(get_space("mbv3-tiny"), 10, 3, resolution, 1.0, cands,
                            "darts" if step == "darts" else "binary", seed=0)
    params = {p.data_ptr() for p in net.parameters()}
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    seeds = (0, 1, 2) if step == "binary" else (0,)
    act, rss = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        if step == "binary":
            net.prepare("weight", gen)
        elif step == "binary-worst":
            big = max(range(n), key=lambda j: (cands[j][1], cands[j][0]))
            net.fix([big] * len(net.mixed))
        elif step == "binary-arch":
            net.prepare("arch", gen)
        else:
            net.prepare("weight", gen)
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor, saved: dict[int, int] = saved) -> torch.Tensor:
            if t.data_ptr() not in params:
                st = t.untyped_storage()
                saved[st.data_ptr()] = st.nbytes()
            return t

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        net.zero_grad(set_to_none=True)
        act.append(sum(saved.values()))
        rss.append((after - before) * 1024)
    return {"step": step, "order": order, "n": n, "activation_bytes": sum(act) / len(act),
            "peak_rss_growth_bytes": max(rss)}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=3, metavar=("STEP", "ORDER", "N"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--max-n", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench/results/proxyless_memory.json"))
    args = ap.parse_args()
    if args.worker:
        step, order, n = args.worker
        print(json.dumps(worker(step, order, int(n), args.batch, args.resolution)))
        return
    from edgenas.io import atomic_write_json, machine_info

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rows = []
    t0 = time.time()
    for order in ORDERS:
        for step in STEPS:
            for n in range(1, args.max_n + 1):
                cmd = [sys.executable, __file__, "--worker", step, order, str(n), "--batch", str(args.batch),
                       "--resolution", str(args.resolution)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{order:12s} {step:13s} N={n}  activations {row['activation_bytes'] / 2**20:8.2f} MiB  "
                      f"peak RSS growth {row['peak_rss_growth_bytes'] / 2**20:8.2f} MiB", flush=True)
    summary = {}
    print(f"\n{'order':12s} {'step':13s} {'act N=1':>9s} {'act N=7':>9s} {'ratio':>6s} {'RSS ratio':>9s}")
    for order in ORDERS:
        for step in STEPS:
            r = {x["n"]: x for x in rows if x["order"] == order and x["step"] == step}
            a1, an = r[1]["activation_bytes"], r[args.max_n]["activation_bytes"]
            m1, mn = r[1]["peak_rss_growth_bytes"], r[args.max_n]["peak_rss_growth_bytes"]
            summary[f"{order}/{step}"] = {"activation_ratio": an / a1, "rss_ratio": mn / m1 if m1 else None}
            rss = f"{mn / m1:9.2f}" if m1 else f"{'n/a':>9s}"
            print(f"{order:12s} {step:13s} {a1 / 2**20:8.2f}M {an / 2**20:8.2f}M {an / a1:6.2f} {rss}")
    atomic_write_json(args.out, {
        "command": " ".join(sys.argv), "machine": machine_info(), "batch": args.batch,
        "resolution": args.resolution, "space": "mbv3-tiny", "orders": {k: [f"k{a}e{b}" for a, b in v]
                                                                        for k, v in ORDERS.items()},
        "rows": rows, "summary": summary, "seconds": time.time() - t0,
        "targets": {"binary growth N=1->7": "<= 1.5x", "darts growth N=1->7": ">= 4x"},
    })
    _plot(rows, args.max_n, Path(args.out).with_suffix(".png"))


def _plot(rows: list[dict], max_n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, order in zip(axes, ORDERS, strict=True):
        for step, style in zip(STEPS, ("o-", "v--", "^:", "s-"), strict=True):
            r = sorted((x for x in rows if x["order"] == order and x["step"] == step), key=lambda x: x["n"])
            ax.plot([x["n"] for x in r], [x["activation_bytes"] / 2**20 for x in r], style, label=step)
        ax.set_title(f"candidate order {order}")
        ax.set_xlabel("candidates per block N")
        ax.set_xticks(range(1, max_n + 1))
    axes[0].set_ylabel("activation memory of one step (MiB)")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
