"""NAAS's compiler mapping: loop order and tiling around the buffer, checked against running the loop nest."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.hardware.accelerator import Accelerator, network_cost, op_cost
from edgenas.hardware.graph import Op
from edgenas.hardware.mapping import ORDERS, ConvShape, best_mapping, mapping_costs, shape_of, tile_sizes
from edgenas.hardware.roofline import arch_ops
from edgenas.spaces import get_space


def run_loop_nest(sh: ConvShape, order: tuple[str, ...], tk: int, th: int, tc: int) -> dict[str, int]:
    """Walk the tiles in ``order`` with one resident tile per tensor; count what crosses the DRAM boundary."""
    trips = {"k": math.ceil(sh.cout / tk), "h": math.ceil(sh.out_h / th), "c": math.ceil(sh.cpg / tc)}

    def size(i: int, t: int, dim: int) -> int:
        return min(t, dim - i * t)

    def out_tile(k: int, h: int) -> int:
        return size(k, tk, sh.cout) * size(h, th, sh.out_h) * sh.out_w

    resident: dict[str, tuple[int, ...] | None] = {"w": None, "i": None, "o": None}
    traffic, visited = {"w": 0, "i": 0, "o": 0}, set()
    for idx in itertools.product(*(range(trips[loop]) for loop in order)):
        k, h, c = (dict(zip(order, idx, strict=True))[loop] for loop in "khc")
        if resident["w"] != (k, c):
            resident["w"] = (k, c)
            traffic["w"] += size(k, tk, sh.cout) * size(c, tc, sh.cpg) * sh.kh * sh.kw
        tile_in = (k, h, c) if sh.groups > 1 else (h, c)
        if resident["i"] != tile_in:
            resident["i"] = tile_in
            rows = min(sh.in_h, (size(h, th, sh.out_h) - 1) * sh.stride + sh.kh)
            channels = size(k, tk, sh.cout) * size(c, tc, sh.cpg) if sh.groups > 1 else size(c, tc, sh.cpg)
            traffic["i"] += channels * rows * sh.in_w
        if resident["o"] != (k, h):
            if resident["o"] is not None:
                traffic["o"] += out_tile(*resident["o"])  # written back
            if (k, h) in visited:
                traffic["o"] += out_tile(k, h)  # partial sums read back
            visited.add((k, h))
            resident["o"] = (k, h)
    traffic["o"] += out_tile(*resident["o"])
    return traffic


@pytest.mark.parametrize("shape", [
    ConvShape(8, 12, 3, 3, 1, 6, 6, 6, 6, 1),    # dense 3x3
    ConvShape(8, 8, 3, 3, 8, 4, 4, 8, 8, 2),     # depthwise, stride 2
    ConvShape(6, 10, 1, 1, 1, 5, 5, 5, 5, 1),    # pointwise
])
def test_the_traffic_formula_equals_running_the_loop_nest(shape: ConvShape) -> None:
    for order in ORDERS:
        for tk, th, tc in itertools.product(tile_sizes(shape.cout), tile_sizes(shape.out_h), tile_sizes(shape.cpg)):
            cost = mapping_costs(shape, order, np.array([tk]), np.array([th]), np.array([tc]))
            ran = run_loop_nest(shape, order, int(tk), int(th), int(tc))
            assert (cost["weights"][0], cost["inputs"][0], cost["outputs"][0]) == (ran["w"], ran["i"], ran["o"]), (
                order, tk, th, tc)


def test_the_best_mapping_is_the_cheapest_that_fits() -> None:
    sh = ConvShape(8, 12, 3, 3, 1, 6, 6, 6, 6, 1)
    compulsory = sh.weight_elems + sh.in_elems + sh.out_elems
    roomy = best_mapping(sh, 10_000)
    assert roomy.dram_elems == compulsory  # everything fits: each tensor crosses once
    tight = best_mapping(sh, 200)
    assert tight.buffer_elems <= 200 and tight.dram_elems > compulsory
    every = [mapping_costs(sh, o, *(np.array([t]) for t in tiles))
             for o in ORDERS for tiles in itertools.product(tile_sizes(12), tile_sizes(6), tile_sizes(8))]
    assert tight.dram_elems == min(c["dram"][0] for c in every if c["buffer"][0] <= 200)
    assert best_mapping(sh, 5) is None  # not even one weight tap, input row band and output row fit


def test_shape_from_an_operator_and_the_searched_mapping_on_a_network() -> None:
    assert shape_of((16, 32, 3, 3, 1, 8, 8), 16 * 16 * 16) == ConvShape(16, 32, 3, 3, 1, 8, 8, 16, 16, 2)
    space = get_space("mbv3")
    ops = arch_ops(space, space.sample(np.random.default_rng(0)), 1000, 3)
    base = dict(name="t", pe_rows=12, pe_cols=14, dataflow="row_stationary", clock_mhz=200, buffer_kb=108,
                dram_gbs=1.6)
    searched = network_cost(Accelerator(**base), ops)
    fixed = network_cost(Accelerator(**base, mapping="fixed"), ops)
    # ImageNet-size layers overflow 108 KB: a good loop order moves far less data than re-reading the input
    assert searched[1]["dram_bytes"] < 0.5 * fixed[1]["dram_bytes"]
    assert searched[1]["latency_ms"] < fixed[1]["latency_ms"]
    assert [c.cycles for c in searched[0]] == [c.cycles for c in fixed[0]]  # the array's work is the dataflow's
    tiny = Accelerator(**{**base, "buffer_kb": 0.001})
    with pytest.raises(EdgenasError, match="cannot hold even the smallest tiles of layer"):
        op_cost(tiny, Op("c", "conv", 1, 2, 9 * 64, 64 * 100, 64 * 100, geometry=(64, 64, 3, 3, 1, 10, 10)))
    with pytest.raises(EdgenasError, match="unknown mapping 'greedy'"):
        Accelerator(**base, mapping="greedy")
