"""The NB201 cell space and its network builder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas.errors import InvalidArchitecture
from edgenas.hardware.flops import count_params
from edgenas.models.nb201 import AvgPool3x3, NB201Cell, build_nb201
from edgenas.spaces import get_space
from edgenas.spaces.nb201 import EDGE_NAMES, OPS, NB201Config, NB201Space, nb201_param_count

ROOT = Path(__file__).resolve().parents[1]
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
ARCH1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def nb201_dir() -> Path:
    base = os.environ.get("EDGENAS_DATA") or str(ROOT.parent / "shared" / "data")
    path = Path(base) / "nb201"
    if not (path / "nb201_accuracy.csv").is_file():
        pytest.skip(f"NB201 reference data not found at {path} (set EDGENAS_DATA)")
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run fastest on one thread (and the machine may be shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space() -> NB201Space:
    sp = get_space("nb201")
    assert isinstance(sp, NB201Space)
    return sp


def test_space_shape(space: NB201Space) -> None:
    assert space.size() == 15_625
    assert space.names == list(EDGE_NAMES)
    assert all(d.choices == OPS for d in space.dimensions)
    assert space.encoding_size == 30


def test_codes_round_trip_every_arch(space: NB201Space) -> None:
    archs = [space.from_code(c) for c in range(space.size())]
    codes = space.codes(archs)
    assert np.array_equal(codes, np.arange(space.size()))
    strings = {space.to_string(a) for a in archs}
    assert len(strings) == space.size()
    sample = archs[::97]
    assert [space.from_string(space.to_string(a)) for a in sample] == sample


def test_string_round_trip_of_the_table(space: NB201Space) -> None:
    with open(nb201_dir() / "nb201_accuracy.csv", newline="") as f:
        strings = [row["arch"] for row in csv.DictReader(f)]
    assert len(strings) == 15_625
    archs = [space.from_string(s) for s in strings]
    assert [space.to_string(a) for a in archs] == strings
    assert len(set(space.codes(archs).tolist())) == 15_625


def test_inputs_in_any_order_parse_to_the_same_arch(space: NB201Space) -> None:
    shuffled = ARCH1.replace(
        "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "|skip_connect~2|skip_connect~0|nor_conv_3x3~1|"
    )
    assert space.to_string(space.from_string(shuffled)) == ARCH1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node group(s)"),
        (ARCH1.replace("|nor_conv_3x3~0|avg", "|conv_3x3~0|avg"),
         "node 2 edge 1 'conv_3x3~0' (character 19)"),
        (ARCH1.replace("avg_pool_3x3~1", "avg_pool_3x3~2"), "must be a node before node 2"),
        (ARCH1.replace("avg_pool_3x3~1", "avg_pool_3x3~0"), "node 0 feeds node 2 twice"),
        (ARCH1.replace("|skip_connect~2|", "|"), "node 3 (character 50): 2 edge(s), expected 3"),
        (ARCH1.replace("nor_conv_3x3~0|+", "nor_conv_3x3|+", 1), "an edge is 'op~input'"),
        (ARCH1[1:], "starting and ending with '|'"),
        ("", "empty NB201 string"),
    ],
)
def test_malformed_strings_say_where(space: NB201Space, text: str, fragment: str) -> None:
    with pytest.raises(InvalidArchitecture) as err:
        space.from_string(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_op_suggests_the_closest(space: NB201Space) -> None:
    with pytest.raises(InvalidArchitecture, match="did you mean 'nor_conv_3x3'"):
        space.from_string(ARCH1.replace("nor_conv_3x3~1", "nor_conv_3x4~1"))


def test_dict_errors(space: NB201Space) -> None:
    arch = space.from_string(ARCH1)
    with pytest.raises(InvalidArchitecture, match="edge 0->2 'conv' not in"):
        space.codes([{**arch, "edge_0_2": "conv"}])
    missing = dict(arch)
    del missing["edge_2_3"]
    with pytest.raises(InvalidArchitecture, match="edge 2->3 is missing"):
        space.code(missing)
    with pytest.raises(InvalidArchitecture, match="unknown dimension 'edge_0_4'"):
        space.code({**arch, "edge_0_4": "none"})
    with pytest.raises(InvalidArchitecture, match=r"in \[0, 15625\)"):
        space.from_code(15_625)


def test_search_operators_stay_in_the_space(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    a, b = space.sample(rng), space.sample(rng)
    child = space.mutate(a, rng)
    assert child != a and space.validate(child) == child
    space.validate(space.crossover(a, b, rng))
    assert len(space.neighbours(a)) == 6 * 4
    assert space.decode(space.encode(a)) == a


@pytest.mark.parametrize(
    ("text", "params"),
    [
        (ARCH0, 129_306),  # row 0 of nb201_accuracy.csv: 0.129306 M in NAS-Bench-201
        (ARCH1, 802_426),  # row 1: 0.802426 M
        # Derived from the rules in edgenas/models/nb201.py: the skeleton alone is 73,306 parameters;
        # a 3x3 conv edge adds 5 x (2,336 + 9,280 + 36,992) = 243,040; a 1x1 conv edge
        # 5 x (288 + 1,088 + 4,224) = 28,000.
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 73_306),
        ("|skip_connect~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|avg_pool_3x3~1|none~2|", 73_306),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
         73_306 + 6 * 243_040),
        ("|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
         73_306 + 6 * 28_000),
        # A conv whose node never reaches the output still has its parameters, as in NB201.
        ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", 73_306 + 243_040),
    ],
)
def test_param_counts_match_nas_bench_201(space: NB201Space, text: str, params: int) -> None:
    arch = space.from_string(text)
    assert nb201_param_count(arch) == params
    assert count_params(space.build(arch, num_classes=10)) == params


def test_param_count_closed_form_other_skeleton() -> None:
    small = NB201Space.from_config("nb201-small", NB201Config(channels=8, cells_per_stage=1))
    arch = small.from_string(ARCH1)
    model = small.build(arch, num_classes=7, in_channels=1)
    assert count_params(model) == nb201_param_count(arch, 7, 1, small.nb201)


def test_every_op_runs_forward_and_backward(space: NB201Space) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8)
    for op in OPS:
        cell = NB201Cell([op] * 6, 8)
        y = cell(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        if op in ("nor_conv_1x1", "nor_conv_3x3"):
            y.sum().backward()
            assert all(p.grad is not None for p in cell.parameters())
    small = NB201Space.from_config("nb201-small", NB201Config(channels=4, cells_per_stage=1))
    for op in OPS:
        arch = {n: op for n in EDGE_NAMES}
        model = small.build(arch, num_classes=5, seed=1)
        out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 5)
        assert model.features(torch.randn(1, 3, 32, 32)).shape == (1, 16, 8, 8)


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 4, 5, 7), (1, 4, 1, 1)], ids=["8x8", "5x7", "1x1"])
def test_avg_pool_op_is_the_padding_free_average(shape: tuple[int, ...], tmp_path: Path) -> None:
    """The depthwise-convolution pooling equals nn.AvgPool2d(3, 1, 1, count_include_pad=False) in value,
    gradient and second derivative; tracing and ONNX export keep the plain pooling op."""
    torch.manual_seed(0)
    fast, ref = AvgPool3x3(4), torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(fast(x), ref(x), atol=1e-12)
    assert torch.allclose(fast(x.float().contiguous(memory_format=torch.channels_last)), ref(x.float()), atol=1e-6)
    w = torch.randn(shape, dtype=torch.float64)
    (g_fast,) = torch.autograd.grad((fast(x) * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref(x) * w).sum(), x)
    assert torch.allclose(g_fast, g_ref, atol=1e-12)
    # the double backward GraSP takes: d/dx of <grad, grad> through the pooling of x * x
    h_fast = torch.autograd.grad(torch.autograd.grad(fast(x * x).sum(), x, create_graph=True)[0].pow(2).sum(), x)[0]
    h_ref = torch.autograd.grad(torch.autograd.grad(ref(x * x).sum(), x, create_graph=True)[0].pow(2).sum(), x)[0]
    assert torch.allclose(h_fast, h_ref, atol=1e-10)
    assert "avg_pool2d" in str(torch.fx.symbolic_trace(torch.nn.Sequential(fast)).graph)
    onnx = pytest.importorskip("onnx")
    from edgenas.hardware.measure import export_onnx

    if shape[2] == shape[3]:
        path = tmp_path / "pool.onnx"
        export_onnx(torch.nn.Sequential(fast), path, resolution=shape[2], in_channels=4)
        assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["AveragePool"]


def test_none_edges_cut_the_path() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    # Every input of node 3 is `none`: the cell outputs zeros whatever the rest computes.
    cut = NB201Cell(["nor_conv_3x3", "nor_conv_3x3", "skip_connect", "none", "none", "none"], 4)
    assert torch.count_nonzero(cut(x)) == 0
    # A conv on edge 0->2 whose only way out (2->3) is `none` gets no gradient; the live conv on 0->1 does.
    cell = NB201Cell(["nor_conv_3x3", "nor_conv_3x3", "none", "none", "skip_connect", "none"], 4)
    cell(x).pow(2).sum().backward()
    g = cell.edges[1][1].weight.grad
    assert g is None or torch.count_nonzero(g) == 0
    assert cell.edges[0][1].weight.grad.abs().sum() > 0
    # Node 1 equals conv(x), so the cell output is exactly that edge's output.
    with torch.no_grad():
        assert torch.allclose(cell(x), cell.edges[0](x))


def test_builder_is_deterministic_under_seed(space: NB201Space) -> None:
    arch = space.from_string(ARCH1)
    a = build_nb201(space, arch, num_classes=10, seed=3)
    b = build_nb201(space, arch, num_classes=10, seed=3)
    c = build_nb201(space, arch, num_classes=10, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
