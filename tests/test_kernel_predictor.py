"""Kernel-level latency prediction (nn-Meter): kernel detection, sampling, the per-type regressors, the
calibrated network sum, resumable profiling, the ``kernels:PATH`` target and the CLI's bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.hardware.graph import graph_ops
from edgenas.hardware.kernel_predictor import KernelPredictor, network_kernels, profile_kernels, random_archs
from edgenas.hardware.kernels import Kernel, kernels_of_arch, kernels_of_model, sample_kernels
from edgenas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 5, 1, 2, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Conv2d(8, 8, 1, bias=False)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.pw(self.dw(x))
        return self.head(x.mean((2, 3)))


def test_kernels_of_a_model_are_its_unfused_operators_in_order():
    ks = kernels_of_model(_Tiny(), (1, 3, 16, 16))
    assert [k.key for k in ks] == ["conv:16x3x8x3x2x1", "dwconv:8x8x5x1", "conv:8x8x8x1x1x1", "eltwise:512x2",
                                   "pool:8x8x1", "linear:8x10"]
    with pytest.raises(EdgenasError, match="batch 1"):
        kernels_of_model(_Tiny(), (2, 3, 16, 16))


def test_what_the_runtime_never_runs_is_no_kernel():
    """Kernels are read from the exported graph: an NB201 network whose cells pass nothing on (every edge
    into their output node 'none' or fed only by zeros) is a constant, and a ReLU that feeds two
    convolutions cannot be fused into either."""
    nb = get_space("nb201")
    cut = {"edge_0_1": "none", "edge_0_2": "none", "edge_1_2": "avg_pool_3x3", "edge_0_3": "none",
           "edge_1_3": "avg_pool_3x3", "edge_2_3": "nor_conv_1x1"}
    assert kernels_of_arch(nb, cut) == []

    class PreAct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(x)
            return self.a(x) + self.b(x)

    assert [k.key for k in kernels_of_model(PreAct(), (1, 4, 8, 8))] == [
        "eltwise:256x1", "conv:8x4x4x1x1x1", "conv:8x4x4x3x1x1", "eltwise:256x2"]


@pytest.mark.parametrize("name", ["mbv3-tiny", "nb201"])
def test_kernel_costs_add_up_to_the_network_macs(name):
    space = get_space(name)
    arch = random_archs(space, 1, 3)[0]
    ks = kernels_of_arch(space, arch)
    r = space.resolution(arch)
    net = space.build(arch, 10, 3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sum(k.type in ("conv", "dwconv", "linear") for k in ks) == len(convs)
    total = graph_ops(net, (1, 3, r, r)).totals()["macs"]
    assert sum(k.costs()[0] for k in ks if k.type in ("conv", "dwconv", "linear")) == total


@pytest.mark.parametrize("key", ["conv:9x6x10x3x2x2", "dwconv:8x12x7x2", "linear:16x5", "pool:8x4x1", "pool:8x4x8",
                                 "pool:8x4x4", "eltwise:96x2", "eltwise:96x1"])
def test_a_kernels_module_is_that_kernel_again(key):
    k = Kernel.from_key(key)
    module, shape = k.module()
    again = [a for a in kernels_of_model(module, shape) if a.type == k.type]
    if k.type == "eltwise":  # the module adds its one input to itself: one operand buffer, read twice
        assert [a.config[0] for a in again] == [k.config[0]]
    else:
        assert [a.key for a in again] == [key]
    assert module(torch.zeros(shape)).numel() > 0


def test_sampling_keeps_the_prior_and_perturbs_sizes_only():
    prior = [Kernel.from_key("conv:16x8x24x1x1x1"), Kernel.from_key("dwconv:8x48x5x2")] * 2
    a, b = sample_kernels(prior, 3, seed=1), sample_kernels(prior, 3, seed=1)
    assert a == b and a[:2] == prior[:2] and len(a) == len(set(a))
    for k in a:
        fields = dict(zip(("hw", "cin", "cout", "kernel", "stride", "groups"), k.config, strict=False))
        if k.type == "conv":
            assert (fields["kernel"], fields["stride"], fields["groups"]) == (1, 1, 1)
        else:
            assert k.type == "dwconv" and k.config[2:] == (5, 2)
    assert len(a) > 2
    wide = sample_kernels(prior, 0, seed=2, random_per_type=20)
    drawn = [k for k in wide if k not in prior]
    assert len(drawn) > 20 and {k.type for k in drawn} == {"conv", "dwconv"}
    for k in drawn:  # sizes within [half the smallest, twice the largest]; kernel sizes and strides as seen
        if k.type == "conv":
            assert 8 <= k.config[0] <= 32 and 4 <= k.config[1] <= 16 and 12 <= k.config[2] <= 48
            assert k.config[3:] == (1, 1, 1)
        else:
            assert 4 <= k.config[0] <= 16 and 24 <= k.config[1] <= 96 and k.config[2:] == (5, 2)
    with pytest.raises(EdgenasError, match="unknown kernel type 'deconv'"):
        Kernel.from_key("deconv:1x2")


def _fake_ms(k: Kernel) -> float:
    macs, moved, _ = k.costs()
    return 0.003 + macs * 2e-8 + moved * 4e-7


def test_the_predictor_learns_kernel_latencies_and_survives_save_and_load(tmp_path):
    space = get_space("mbv3-tiny")
    prior = [k for ks in network_kernels(space, random_archs(space, 6, 0)) for k in ks]
    kernels = sample_kernels(prior, 2, seed=0)
    pred = KernelPredictor(seed=0).fit(kernels, [_fake_ms(k) for k in kernels])
    held = [k for ks in network_kernels(space, random_archs(space, 3, 99)) for k in ks]
    truth = np.array([_fake_ms(k) for k in held])
    err = np.abs(pred.predict_kernels(held) / truth - 1)
    assert np.median(err) < 0.05 and np.mean(err) < 0.15
    # calibration recovers a whole-network relation measured = 1.5 * sum + 0.02
    nets = network_kernels(space, random_archs(space, 8, 7))
    measured = [1.5 * float(sum(_fake_ms(k) for k in ks)) + 0.02 for ks in nets]
    pred.calibrate(nets, measured)
    assert pred.calibration.train_mape is not None and pred.calibration.train_mape < 5
    pred.save(tmp_path / "k.npz")
    again = KernelPredictor.load(tmp_path / "k.npz")
    assert np.allclose(again.predict_kernels(held), pred.predict_kernels(held))
    assert again.predict_network(nets[0]) == pytest.approx(pred.predict_network(nets[0]))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EdgenasError, match="corrupted or truncated"):
        KernelPredictor.load(tmp_path / "bad.npz")
    only_conv = KernelPredictor().fit([k for k in kernels if k.type == "conv"], [1.0] * sum(
        k.type == "conv" for k in kernels))
    with pytest.raises(EdgenasError, match="no model for 'dwconv' kernels"):
        only_conv.predict_kernels(held)


def test_profiling_resumes_after_an_interruption(tmp_path, monkeypatch):
    import edgenas.hardware.layer_measure as lm

    calls: list[str] = []

    def fake_measure(items, settings, *args, **kwargs):
        for name, _module, _shape in items:
            if len(calls) == 3 and not getattr(fake_measure, "resumed", False):
                raise RuntimeError("layer measurement failed: killed")
            calls.append(name)
            yield name, {"median": 0.01 * len(calls), "mean": 0.0, "std": 0.0, "min": 0.0, "count": 1}

    monkeypatch.setattr(lm, "measure_modules", fake_measure)
    kernels = [Kernel.from_key(k) for k in ("conv:8x3x8x3x1x1", "dwconv:8x8x3x1", "linear:8x4", "pool:8x8x1",
                                            "eltwise:64x2")]
    path = tmp_path / "k.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        profile_kernels(kernels, path, settings=None)
    assert len(path.read_text().splitlines()) == 3
    fake_measure.resumed = True
    done = profile_kernels(kernels, path, settings=None)
    assert calls == [k.key for k in kernels] and set(done) == {k.key for k in kernels}


def test_adaptive_sampling_measures_more_around_the_worst_predicted(tmp_path, monkeypatch):
    import edgenas.hardware.layer_measure as lm
    from edgenas.hardware.kernel_predictor import measure_adaptively

    def fake_measure(items, settings, *args, **kwargs):
        for name, _module, _shape in items:
            k = Kernel.from_key(name)
            bump = 3.0 if k.type == "conv" and k.config[3] == 3 else 1.0  # dense 3x3 convs: a different regime
            yield name, {"median": bump * _fake_ms(k), "mean": 0.0, "std": 0.0, "min": 0.0, "count": 1}

    monkeypatch.setattr(lm, "measure_modules", fake_measure)
    space = get_space("nb201")
    kernels = sample_kernels([k for ks in network_kernels(space, random_archs(space, 2, 0)) for k in ks], 0, seed=0,
                             random_per_type=12)
    more, results = measure_adaptively(kernels, tmp_path / "k.jsonl", None, rounds=1, seed=0, trees=30)
    added = more[len(set(kernels)):]
    assert added and set(results) == {k.key for k in more}
    assert len((tmp_path / "k.jsonl").read_text().splitlines()) == len(more)
    types = {k.type for k in kernels}
    assert all(k.type in types for k in added)
    errs = KernelPredictor(n_estimators=30).out_of_fold_errors(kernels, [results[k.key] for k in kernels])
    assert errs.shape == (len(kernels),) and np.isfinite(errs).all()


def test_kernel_types_export_and_run_under_onnxruntime(tmp_path):
    """One real measurement per kernel type (tiny sizes): every stand-alone module exports and runs."""
    from edgenas.hardware.measure import MeasureSettings

    kernels = [Kernel.from_key(k) for k in ("conv:8x4x8x3x2x1", "dwconv:8x8x3x1", "linear:8x4", "pool:8x8x1",
                                            "pool:8x8x8", "eltwise:64x2")]
    done = profile_kernels(kernels, tmp_path / "k.jsonl", MeasureSettings())
    assert set(done) == {k.key for k in kernels} and all(0 < v < 50 for v in done.values())


def test_kernels_target_predicts_any_space(tmp_path):
    from edgenas.evaluators import EvalContext, make_target

    mb, nb = get_space("mbv3-tiny"), get_space("nb201")
    kernels = sample_kernels([k for s in (mb, nb) for ks in network_kernels(s, random_archs(s, 3, 0)) for k in ks],
                             1)
    pred = KernelPredictor().fit(kernels, [_fake_ms(k) for k in kernels])
    pred.save(tmp_path / "k.npz")
    for space in (mb, nb):
        target = make_target(f"kernels:{tmp_path / 'k.npz'}", EvalContext(space=space, data_spec="synthetic"))
        arch = random_archs(space, 1, 5)[0]
        assert target(arch) == pytest.approx(pred.predict_network(kernels_of_arch(space, arch)))
        assert target.describe().startswith("latency [ms] from the kernel-level predictor")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgenas", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_cli_bad_input_is_one_line(tmp_path):
    p = _cli("latency", "kernels", "--out", str(tmp_path / "k.npz"), "--spaces", "hat-tiny", cwd=tmp_path)
    assert p.returncode == 2 and "Transformer space" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = _cli("latency", "kernels-eval", str(tmp_path / "none.npz"), "--space", "nb201", cwd=tmp_path)
    assert p.returncode == 2 and "not found" in p.stderr
    (tmp_path / "x.npz").write_text(json.dumps({"a": 1}))
    p = _cli("latency", "kernels-eval", str(tmp_path / "x.npz"), "--space", "nb201", cwd=tmp_path)
    assert p.returncode == 2 and "corrupted" in p.stderr
