"""The analytical accelerator model: dataflow mappings on hand-computed layers, memory, presets, the target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.evaluators import EvalContext, make_target
from edgenas.hardware.accelerator import (
    Accelerator,
    array_cycles,
    list_accelerators,
    load_accelerator,
    network_cost,
    op_cost,
)
from edgenas.hardware.graph import Op, graph_ops
from edgenas.hardware.layers import MBV3Layers
from edgenas.hardware.roofline import arch_ops
from edgenas.spaces import get_space


def accel(dataflow: str, rows: int = 4, cols: int = 6, **kw) -> Accelerator:
    base = dict(name="t", pe_rows=rows, pe_cols=cols, dataflow=dataflow, clock_mhz=100, buffer_kb=64,
                dram_gbs=1.0, bytes_per_elem=1, vector_lanes=4)
    return Accelerator(**{**base, **kw})


def conv_op(cin: int, cout: int, k: int, groups: int, out: int, size_in: int | None = None) -> Op:
    size_in = size_in or out
    macs = cout * (cin // groups) * k * k * out * out
    return Op("c", "conv", macs, 2 * macs, cout * (cin // groups) * k * k, cin * size_in**2, cout * out**2,
              geometry=(cin, cout, k, k, groups, out, out))


@pytest.mark.parametrize("dataflow, expected", [
    # 8 -> 12 channels, 3x3, 10x10 output on a 4 x 6 array
    ("weight_stationary", 1 * math.ceil(8 / 4) * math.ceil(12 / 6) * 9 * 100),   # 3,600
    ("output_stationary", math.ceil(10 / 4) * math.ceil(10 / 6) * 8 * 12 * 9),   # 5,184
    # row stationary: set = 3 rows x min(10, 6) = 6 cols; (4 // 3) * (6 // 6) = 1 set; 96 pairs;
    # ceil(10 / 6) = 2 passes of output rows; 10 columns x 3 taps per PE
    ("row_stationary", 96 * 2 * 10 * 3),                                          # 5,760
])
def test_cycles_of_each_dataflow_by_hand(dataflow: str, expected: int) -> None:
    acc = accel(dataflow)
    assert array_cycles(acc, (8, 12, 3, 3, 1, 10, 10)) == expected
    cost = op_cost(acc, conv_op(8, 12, 3, 1, 10))
    assert cost.utilisation == pytest.approx(12 * 8 * 9 * 100 / (expected * 24))
    assert 0 < cost.utilisation <= 1


def test_mapping_utilisation_behaves_as_the_dataflows_should() -> None:
    depthwise = (32, 32, 3, 3, 32, 16, 16)
    dense = (32, 32, 3, 3, 1, 16, 16)
    ws, os_ = accel("weight_stationary"), accel("output_stationary")
    # weight stationary unrolls input x output channels: a depthwise layer uses 1 PE of 24
    assert array_cycles(ws, depthwise) == 32 * 9 * 256
    util = [32 * 9 * 256 / (array_cycles(a, depthwise) * 24) for a in (ws, os_)]
    assert util[0] == pytest.approx(1 / 24) and util[1] > 0.5
    # output stationary unrolls output pixels: a 1x1 output (a classifier) uses 1 PE
    fc = (64, 10, 1, 1, 1, 1, 1)
    assert array_cycles(os_, fc) == 640 and array_cycles(ws, fc) == math.ceil(64 / 4) * math.ceil(10 / 6)
    assert array_cycles(ws, dense) < array_cycles(ws, depthwise) * 32  # dense work per depthwise work


def test_memory_traffic_and_the_bound() -> None:
    op = conv_op(16, 16, 3, 1, 32)  # weights 2,304 B, input 16 KB, output 16 KB at 1 byte
    fits = op_cost(accel("weight_stationary", buffer_kb=64), op)
    assert fits.dram_bytes == op.weight_elems + op.in_elems + op.out_elems
    fixed = op_cost(accel("weight_stationary", buffer_kb=8, mapping="fixed"), op)  # 34.3 KB over 8 KB: 5 tiles
    assert fixed.dram_bytes == op.weight_elems + op.out_elems + 5 * op.in_elems and fixed.mapping == "fixed"
    # the searched mapping keeps all weights and a band of output rows on chip and streams the input once, with
    # the halo rows of each band: 8 bands of 4 output rows read 6 input rows each (1.5x the input)
    tight = op_cost(accel("weight_stationary", buffer_kb=8), op)
    assert tight.dram_bytes == op.weight_elems + op.out_elems + 1.5 * op.in_elems
    assert tight.mapping.endswith("k16 h4 c16")
    slow_dram = op_cost(accel("weight_stationary", dram_gbs=0.001), op)
    assert slow_dram.bound == "memory" and slow_dram.ms == pytest.approx(slow_dram.memory_ms)
    fast = op_cost(accel("weight_stationary", dram_gbs=1000.0), op)
    assert fast.bound == "compute" and fast.ms == pytest.approx(fast.cycles / 100e6 * 1e3)
    pool = op_cost(accel("row_stationary"), Op("p", "pool", 0, 100, 0, 1000, 250))
    assert pool.macs == 0 and pool.cycles == 250  # 1,000 elements over 4 lanes


def test_geometry_of_the_analytic_layers_equals_the_traced_graph(micro, rng) -> None:
    for _ in range(3):
        arch = micro.sample(rng)
        r = micro.resolution(arch)
        traced = graph_ops(micro.build(arch, 10), (1, 3, r, r)).ops
        analytic = arch_ops(micro, arch, 10)
        geo = sorted(o.geometry for o in traced if o.kind in ("conv", "linear"))
        assert geo == sorted(o.geometry for o in analytic if o.kind in ("conv", "linear"))
        assert None not in geo


def test_target_is_vectorised_for_mbv3_and_traced_otherwise(micro, rng) -> None:
    ctx = EvalContext(micro, "synthetic")
    target = make_target("accel:eyeriss", ctx)
    assert target.instant and "row_stationary" in target.describe()
    archs = [micro.sample(rng) for _ in range(4)]
    acc = load_accelerator("eyeriss")
    for a, ms in zip(archs, target.evaluate_batch(archs), strict=True):
        assert ms == pytest.approx(network_cost(acc, arch_ops(micro, a, 10))[1]["latency_ms"], rel=1e-9)
    nb = get_space("nb201")
    t2 = make_target("accel:nvdla-small", EvalContext(nb, "synthetic"))
    arch = nb.sample(rng)
    assert t2(arch) == pytest.approx(network_cost(load_accelerator("nvdla-small"), arch_ops(nb, arch, 10))[1]
                                     ["latency_ms"])
    assert len(MBV3Layers(micro, 10).layers) == len(target.layer_ms)


def test_presets_cite_their_sources_and_bad_specs_are_one_line_errors(tmp_path) -> None:
    assert {"eyeriss", "nvdla-small", "shidiannao"} <= set(list_accelerators())
    for name in list_accelerators():
        a = load_accelerator(name)
        assert a.sources and a.dataflow in ("weight_stationary", "output_stationary", "row_stationary")
    eyeriss = load_accelerator("eyeriss")
    assert (eyeriss.pe_rows, eyeriss.pe_cols, eyeriss.buffer_kb) == (12, 14, 108)
    ctx = EvalContext(get_space("mbv3-tiny"), "synthetic")
    with pytest.raises(EdgenasError, match="unknown accelerator 'eyries'.*did you mean 'eyeriss'"):
        make_target("accel:eyries", ctx)
    with pytest.raises(EdgenasError, match="accel: needs an accelerator"):
        make_target("accel:", ctx)
    bad = tmp_path / "bad.yaml"
    bad.write_text("pe_rows: 4\npe_cols: 4\ndataflow: diagonal\nclock_mhz: 100\nbuffer_kb: 8\ndram_gbs: 1\n")
    with pytest.raises(EdgenasError, match="unknown dataflow 'diagonal'; valid: weight_stationary"):
        load_accelerator(str(bad))
    bad.write_text("pe_rows: 0\npe_cols: 4\ndataflow: row_stationary\nclock_mhz: 100\nbuffer_kb: 8\ndram_gbs: 1\n")
    with pytest.raises(EdgenasError, match="pe_rows must be a positive number"):
        load_accelerator(str(bad))
    bad.write_text("pe_rows: 4\npes: 16\n")
    with pytest.raises(EdgenasError, match="unknown key\\(s\\) pes"):
        load_accelerator(str(bad))
    with pytest.raises(EdgenasError, match="does not fit 2 PE rows"):
        array_cycles(accel("row_stationary", rows=2), (8, 8, 3, 3, 1, 4, 4))
    own = tmp_path / "mine.yaml"
    own.write_text("pe_rows: 16\npe_cols: 16\ndataflow: weight_stationary\nclock_mhz: 500\nbuffer_kb: 256\n"
                   "dram_gbs: 8\n")
    assert make_target(f"accel:{own}", ctx).acc.name == "mine"


def test_eyeriss_model_ranks_nb201_like_hw_nas_bench_better_than_macs(shared_data) -> None:
    from scipy.stats import spearmanr

    from edgenas.benchmarks.nb201_table import load_nb201

    space = get_space("nb201")
    table = load_nb201(shared_data / "nb201")
    codes = np.random.default_rng(3).choice(15625, size=40, replace=False)
    ops = [arch_ops(space, space.from_code(int(c)), 10) for c in codes]
    ours = [network_cost(load_accelerator("eyeriss"), o)[1]["latency_ms"] for o in ops]
    macs = [sum(op.macs for op in o) for o in ops]
    ref = np.asarray(table.latency_of("eyeriss"))[codes]
    assert spearmanr(ours, ref).statistic > spearmanr(macs, ref).statistic


def test_accelerator_command_prints_the_layers_and_writes_json(tmp_path, rng) -> None:
    import json

    from typer.testing import CliRunner

    from edgenas.cli import app

    space = get_space("mbv3-tiny")
    arch = space.sample(rng)
    (tmp_path / "a.json").write_text(json.dumps(arch))
    result = CliRunner().invoke(app, ["accelerator", str(tmp_path / "a.json"), "--accelerator", "shidiannao",
                                      "--top", "3", "--json", str(tmp_path / "o.json")])
    assert result.exit_code == 0, result.output
    assert "output_stationary" in result.output and "presets: eyeriss" in result.output
    report = json.loads((tmp_path / "o.json").read_text())
    expected = network_cost(load_accelerator("shidiannao"), arch_ops(space, arch, 10))[1]["latency_ms"]
    assert report["totals"]["latency_ms"] == pytest.approx(expected)
    assert sum(layer["ms"] for layer in report["layers"]) == pytest.approx(expected)
    assert report["accelerator"]["mapping"] == "searched" and "k" in report["layers"][0]["mapping"]
    result = CliRunner().invoke(app, ["accelerator", str(tmp_path / "a.json"), "--accelerator", "shidiannao",
                                      "--mapping", "fixed", "--json", str(tmp_path / "f.json")])
    assert result.exit_code == 0, result.output
    fixed = json.loads((tmp_path / "f.json").read_text())
    assert fixed["accelerator"]["mapping"] == "fixed" and {c["mapping"] for c in fixed["layers"]} <= {"fixed", ""}
    assert fixed["totals"]["dram_bytes"] >= report["totals"]["dram_bytes"]


def test_latency_devices_lists_the_accelerator_models() -> None:
    from typer.testing import CliRunner

    from edgenas.cli import app

    result = CliRunner().invoke(app, ["latency", "devices"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "raspi4" in result.output
    for name in list_accelerators():
        assert name in result.output
    assert "row_stationary" in result.output and "12x14" in result.output
