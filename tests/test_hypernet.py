"""SMASH's HyperNet and Graph HyperNetworks for NB201 cells: generated weights, the computation graph, training
and resume, the estimator, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from edgenas.data import load_synthetic_dataset
from edgenas.errors import EdgenasError
from edgenas.estimators.graph_hypernet import GraphEncoder, NB201Graph
from edgenas.estimators.hypernet import HyperNB201, HyperNetConfig, load_hypernet, train_hypernet
from edgenas.evaluators import EvalContext, make_estimator
from edgenas.spaces import get_space


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


@pytest.fixture(scope="module")
def data():
    return load_synthetic_dataset(n=200, size=8)


def arch_of(space, ops):
    return space.validate(dict(zip(space.names, ops, strict=True)))


def small_cfg(**kw):
    return HyperNetConfig(**{"channels": 4, "cells_per_stage": 1, "hidden": 16, "rank": 4, "steps": 6,
                             "batch_size": 16, **kw})


def test_generated_weights_follow_the_architecture_only_when_conditioned(space):
    a = arch_of(space, ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "none", "avg_pool_3x3", "nor_conv_3x3"])
    b = arch_of(space, ["nor_conv_3x3", "nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_3x3"])
    for conditioned, graph in ((True, False), (True, True), (False, False)):  # SMASH, GHN, plain sharing
        torch.manual_seed(0)
        net = HyperNB201(space, 10, 3, small_cfg(conditioned=conditioned, graph=graph))
        net.set_active(a)
        wa = net.generated_weights()
        assert set(wa) == {(c, e) for c in range(3) for e in (0, 1, 5)}  # conv edges only, every cell
        assert wa[0, 0].shape == (4, 4, 3, 3) and wa[2, 1].shape == (16, 16, 1, 1)
        net.set_active(b)
        wb = net.generated_weights()
        # edge 0 is a 3x3 conv in both: its weights differ only if the HyperNet sees the architecture
        assert torch.allclose(wa[0, 0], wb[0, 0]) != conditioned
        assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_the_computation_graph_of_a_ghn(space):
    g = NB201Graph(n_cells=4, cells_per_stage=2)
    # stem, 4 cells of 3 sum nodes and 6 op nodes, one reduction, the classifier
    assert g.n == 1 + 4 * 9 + 1 + 1 and g.types.count("reduction") == 1
    level = {v: d for d, nodes in enumerate(g.levels) for v in nodes}
    assert all(level[u] < level[v] for u, v in g.links)  # the levels are a topological order
    assert g.levels[0] == [0] and g.types[g.levels[-1][0]] == "classifier"
    enc = GraphEncoder(space[space.names[0]].choices, 4, 2, hidden=8, out=6)
    ops = ["nor_conv_3x3", "none", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1"]
    a = enc.adjacency(ops)
    for cell in range(4):
        for e, op in enumerate(ops):
            v = g.edge_node[cell][e]
            # an op node has one input and one output; a 'none' edge's node is cut off from the graph
            assert (a[v].sum(), a[:, v].sum()) == ((0, 0) if op == "none" else (1, 1))
    assert enc(ops).shape == (4, 6, 6)


def test_a_ghn_places_an_op_by_the_graph_alone(space):
    """The same op on the same edge gets other weights in another cell (no position code: the graph tells them
    apart), and an edge's weights change when a distant edge's op changes (propagation reaches it)."""
    torch.manual_seed(0)
    net = HyperNB201(space, 10, 3, small_cfg(graph=True, cells_per_stage=2))
    ops = ["nor_conv_3x3", "skip_connect", "skip_connect", "none", "avg_pool_3x3", "nor_conv_3x3"]
    net.set_active(arch_of(space, ops))
    w = net.generated_weights()
    assert not torch.allclose(w[0, 0], w[1, 0])  # cells 0 and 1 of stage 0: same shape, other place in the graph
    net.set_active(arch_of(space, ops[:4] + ["nor_conv_1x1"] + ops[5:]))  # edge 1->3 changes
    assert not torch.allclose(net.generated_weights()[0, 0], w[0, 0])
    with pytest.raises(EdgenasError, match="graph hypernetwork is conditioned on the architecture"):
        HyperNB201(space, 10, 3, small_cfg(graph=True, conditioned=False))


def test_training_learns_resumes_exactly_and_the_estimator_scores(space, data, tmp_path):
    cfg = small_cfg(steps=8)
    whole = train_hypernet(space, data, tmp_path / "whole", cfg, checkpoint_every=4)
    assert [h["step"] for h in whole["history"]] == [4, 8]

    def interrupt(message):
        raise KeyboardInterrupt(message)

    # interrupted right after the step-4 checkpoint, then resumed: the same weights as the uninterrupted run
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt, match="step 4/8"):
        train_hypernet(space, data, part, cfg, progress=interrupt, checkpoint_every=4)
    assert not (part / "hypernet.pt").exists()
    resumed = train_hypernet(space, data, part, cfg, resume=True, checkpoint_every=4)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in whole["history"]])
    a, _ = load_hypernet(tmp_path / "whole")
    b, _ = load_hypernet(part)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name
    with pytest.raises(EdgenasError, match="resume with the same data and settings"):
        train_hypernet(space, data, part, small_cfg(steps=9), resume=True)
    ctx = EvalContext(space=space, data_spec="synthetic")
    est = make_estimator(f"hypernet:{tmp_path / 'whole'}", ctx)
    accs = [est(space.sample(np.random.default_rng(i))) for i in range(3)]
    assert all(0.0 <= x <= 100.0 for x in accs)
    with pytest.raises(EdgenasError, match="generates NB201 cell networks; space 'mbv3-tiny' is not one"):
        make_estimator(f"hypernet:{tmp_path / 'whole'}", EvalContext(space=get_space("mbv3-tiny")))
    with pytest.raises(EdgenasError, match="trained for 10 classes and 3 input channels"):
        make_estimator(f"hypernet:{tmp_path / 'whole'}", EvalContext(space=space, data_spec="digits"))


def test_cli_train_then_search_with_the_hypernet(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "edgenas", *args], capture_output=True, text=True, cwd=tmp_path)

    r = run("hypernet", "train", "--data", "synthetic", "--out", "hn", "--steps", "4", "--channels", "4",
            "--cells-per-stage", "1", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    assert "HyperNet: hn/hypernet.pt" in r.stdout
    r = run("search", "--space", "nb201", "--data", "synthetic", "--estimator", "hypernet:hn", "--strategy", "random",
            "--budget", "3", "--out", "s")
    assert r.returncode == 0, r.stderr
    r = run("hypernet", "train", "--space", "mbv3-tiny", "--out", "x")
    assert r.returncode == 2 and "is not one" in r.stderr
    r = run("hypernet", "train", "--data", "synthetic", "--out", "ghn", "--ghn", "--steps", "3", "--channels", "4",
            "--cells-per-stage", "1", "--batch-size", "8")
    assert r.returncode == 0 and "graph HyperNet: ghn/hypernet.pt" in r.stdout, r.stderr
    net, _ = load_hypernet(tmp_path / "ghn")
    assert net.cfg.graph and isinstance(net.hyper, GraphEncoder)
    r = run("hypernet", "train", "--out", "y", "--ghn", "--shared")
    assert r.returncode == 2 and "exclude each other" in r.stderr
