"""SMASH's HyperNet for NB201 cells: generated weights, training and resume, the estimator, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from edgenas.data import load_synthetic_dataset
from edgenas.errors import EdgenasError
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
    for conditioned in (True, False):
        torch.manual_seed(0)
        net = HyperNB201(space, 10, 3, small_cfg(conditioned=conditioned))
        net.set_active(a)
        wa = net.generated_weights()
        assert set(wa) == {(c, e) for c in range(3) for e in (0, 1, 5)}  # conv edges only, every cell
        assert wa[0, 0].shape == (4, 4, 3, 3) and wa[2, 1].shape == (16, 16, 1, 1)
        net.set_active(b)
        wb = net.generated_weights()
        # edge 0 is a 3x3 conv in both: its weights differ only if the HyperNet sees the architecture
        assert torch.allclose(wa[0, 0], wb[0, 0]) != conditioned
        assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


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
