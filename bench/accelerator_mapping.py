"""Searched vs fixed compiler mapping on the analytical accelerator model: DRAM traffic, latency, rankings.

NAAS (Lin et al., DAC 2021) searches each layer's loop order and tiling around the accelerator's buffer
with the network and the accelerator. edgenas searches them exhaustively per layer
(``edgenas/hardware/mapping.py``, the default ``mapping: searched``); the ``fixed`` mapping re-reads a
layer's whole input once per buffer-sized tile. For seeded random networks of each space on each shipped
preset this reports, side by side in one run:

* DRAM traffic and latency under both mappings (their ratio per network), and the searched traffic over
  the compulsory traffic (every tensor crossing the DRAM boundary once);
* the share of array layers the search improves (and any it makes worse);
* whether the mapping changes which networks are faster (Spearman of the two latencies over networks);
* the loop orders chosen and the search time per layer (cache cleared).

    python bench/accelerator_mapping.py        # ~2 minutes

Writes ``bench/results/accelerator_mapping.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import save  # noqa: E402
from edgenas.hardware.accelerator import list_accelerators, load_accelerator, network_cost  # noqa: E402
from edgenas.hardware.mapping import best_mapping  # noqa: E402
from edgenas.hardware.roofline import arch_ops  # noqa: E402
from edgenas.spaces import get_space  # noqa: E402

SPACES = {"mbv3": 1000, "mbv3-tiny": 10, "nb201": 10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    figures: dict = {"settings": vars(args), "spaces": {}}
    rows = []
    for space_name, classes in SPACES.items():
        space = get_space(space_name)
        rng = np.random.default_rng(args.seed)
        nets = [arch_ops(space, space.sample(rng), classes, 3) for _ in range(args.networks)]
        figures["spaces"][space_name] = {}
        for acc_name in list_accelerators():
            base = load_accelerator(acc_name)
            searched_acc, fixed_acc = base.with_(mapping="searched"), base.with_(mapping="fixed")
            best_mapping.cache_clear()
            t0 = time.perf_counter()
            searched = [network_cost(searched_acc, ops) for ops in nets]
            search_s = time.perf_counter() - t0
            fixed = [network_cost(fixed_acc, ops) for ops in nets]
            b = base.bytes_per_elem
            compulsory = np.array([sum((o.weight_elems + o.in_elems + o.out_elems) * b for o in ops
                                       if o.kind in ("conv", "linear", "pool", "eltwise")) for ops in nets])
            dram_s = np.array([s[1]["dram_bytes"] for s in searched])
            dram_f = np.array([f[1]["dram_bytes"] for f in fixed])
            lat_s = np.array([s[1]["latency_ms"] for s in searched])
            lat_f = np.array([f[1]["latency_ms"] for f in fixed])
            better = worse = n_layers = 0
            orders: Counter[str] = Counter()
            for (ls, _), (lf, _) in zip(searched, fixed, strict=True):
                for cs, cf in zip(ls, lf, strict=True):
                    if cs.kind not in ("conv", "linear"):
                        continue
                    n_layers += 1
                    better += cs.dram_bytes < cf.dram_bytes * (1 - 1e-9)
                    worse += cs.dram_bytes > cf.dram_bytes * (1 + 1e-9)
                    orders[cs.mapping.split(" ")[0]] += 1
            rho = float(spearmanr(lat_f, lat_s).statistic) if np.ptp(lat_f) > 0 else float("nan")
            entry = {
                "dram_mb_fixed": float(dram_f.mean() / 1e6), "dram_mb_searched": float(dram_s.mean() / 1e6),
                "dram_ratio_fixed_over_searched_median": float(np.median(dram_f / dram_s)),
                "dram_ratio_fixed_over_searched_max": float(np.max(dram_f / dram_s)),
                "searched_over_compulsory_median": float(np.median(dram_s / compulsory)),
                "latency_ms_fixed": float(lat_f.mean()), "latency_ms_searched": float(lat_s.mean()),
                "latency_ratio_fixed_over_searched_median": float(np.median(lat_f / lat_s)),
                "latency_ratio_fixed_over_searched_max": float(np.max(lat_f / lat_s)),
                "spearman_latency_fixed_vs_searched": rho,
                "array_layers": n_layers, "layers_improved": better, "layers_worse": worse,
                "loop_orders": dict(orders.most_common()),
                "search_ms_per_network_uncached": 1e3 * search_s / len(nets),
            }
            figures["spaces"][space_name][acc_name] = entry
            rows.append((space_name, acc_name, entry))
            print(f"{space_name:9s} {acc_name:11s} DRAM {entry['dram_mb_fixed']:8.2f} -> "
                  f"{entry['dram_mb_searched']:7.2f} MB, latency {entry['latency_ms_fixed']:8.3f} -> "
                  f"{entry['latency_ms_searched']:7.3f} ms, "
                  f"rho {rho:.3f}, layers improved {better}/{n_layers} (worse {worse})", flush=True)
    path = save("accelerator_mapping", figures)
    print("\n| space | accelerator | DRAM MB fixed -> searched (median ratio, max) | searched / compulsory | "
          "latency ms fixed -> searched (median ratio, max) | ρ of latencies | layers improved / worse |")
    for space_name, acc_name, e in rows:
        print(f"| {space_name} | {acc_name} | {e['dram_mb_fixed']:.2f} -> {e['dram_mb_searched']:.2f} "
              f"({e['dram_ratio_fixed_over_searched_median']:.2f}x, {e['dram_ratio_fixed_over_searched_max']:.2f}x) | "
              f"{e['searched_over_compulsory_median']:.2f} | {e['latency_ms_fixed']:.3f} -> "
              f"{e['latency_ms_searched']:.3f} ({e['latency_ratio_fixed_over_searched_median']:.2f}x, "
              f"{e['latency_ratio_fixed_over_searched_max']:.2f}x) | {e['spearman_latency_fixed_vs_searched']:.3f} | "
              f"{e['layers_improved']} / {e['layers_worse']} of {e['array_layers']} |")
    print("written", path)


if __name__ == "__main__":
    main()
