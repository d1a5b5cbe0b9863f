"""NAAS-style co-design: the joint network x accelerator space, its latency target, PE budget and search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from edgenas.codesign.costs import SharedNetworkAccuracy
from edgenas.codesign.space import HW_CHOICES, CodesignSpace
from edgenas.errors import EdgenasError
from edgenas.evaluators import EvalContext, Evaluator, make_cost, make_target
from edgenas.experiment import ExperimentConfig, run_search
from edgenas.hardware.accelerator import load_accelerator, network_cost
from edgenas.hardware.roofline import arch_ops
from edgenas.spaces import get_space


def test_space_is_the_network_times_the_accelerator(micro, rng) -> None:
    cs = get_space("codesign:tests.micro_space:micro_space")
    assert isinstance(cs, CodesignSpace) and cs.ref == "codesign:tests.micro_space:micro_space"
    per_hw = np.prod([len(c) for c in HW_CHOICES.values()])
    assert cs.size() == micro.size() * per_hw
    arch = cs.sample(rng)
    net = cs.network_part(arch)
    assert micro.validate(net) == net and set(arch) - set(net) == set(HW_CHOICES)
    assert cs.network_key(arch) == micro.key(net)
    other_hw = {**arch, "hw.pe_rows": 32 if arch["hw.pe_rows"] != 32 else 8}
    assert cs.key(other_hw) != cs.key(arch) and cs.network_key(other_hw) == cs.network_key(arch)
    built = cs.build(arch, 10)
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in micro.build(net, 10).parameters())
    with pytest.raises(EdgenasError, match="unknown accelerator dimension"):
        CodesignSpace.create(micro, {"hw.clock": (100,)})
    with pytest.raises(EdgenasError, match="unknown dataflow 'diagonal'"):
        CodesignSpace.create(micro, {"hw.dataflow": ("diagonal",)})
    narrow = CodesignSpace.create(micro, {"hw.pe_rows": (12,), "hw.pe_cols": (14,)})
    assert narrow.size() == micro.size() * 5 * 3


def test_each_candidate_runs_on_its_own_accelerator(rng, tmp_path) -> None:
    cs = get_space("codesign:mbv3-tiny")
    target = make_target("accel:eyeriss", EvalContext(cs, "synthetic"))
    assert target.instant and "searched PE array" in target.describe()
    base = load_accelerator("eyeriss")
    archs = [cs.sample(rng) for _ in range(6)]
    for a, ms in zip(archs, target.evaluate_batch(archs), strict=True):
        acc = cs.accelerator(a, base)
        assert (acc.pe_rows, acc.pe_cols, acc.dataflow) == (a["hw.pe_rows"], a["hw.pe_cols"], a["hw.dataflow"])
        assert acc.clock_mhz == base.clock_mhz and acc.dram_gbs == base.dram_gbs
        expected = network_cost(acc, arch_ops(cs.network, cs.network_part(a), 10))[1]["latency_ms"]
        assert ms == pytest.approx(expected, rel=1e-9)
    big = {**archs[0], "hw.pe_rows": 32, "hw.pe_cols": 32, "hw.buffer_kb": 512}
    small = {**archs[0], "hw.pe_rows": 8, "hw.pe_cols": 8, "hw.buffer_kb": 32}
    # at Eyeriss's 1.6 GB/s this small network is memory-bound (the array's size hardly matters); with fast DRAM
    # its array layers are compute-bound, and 16x the PEs make it faster
    assert target(big) <= target(small)
    fast_dram = tmp_path / "fast.yaml"
    fast_dram.write_text(yaml.safe_dump({**base.to_dict(), "dram_gbs": 1000.0}))
    fast = make_target(f"accel:{fast_dram}", EvalContext(cs, "synthetic"))
    assert fast(big) < fast(small)


def test_pe_budget_and_its_errors(rng) -> None:
    cs = get_space("codesign:mbv3-tiny")
    pes = make_cost("pes", EvalContext(cs, "synthetic"))
    arch = cs.sample(rng)
    assert pes(arch) == arch["hw.pe_rows"] * arch["hw.pe_cols"]
    with pytest.raises(EdgenasError, match="use --space codesign:mbv3-tiny"):
        make_cost("pes", EvalContext(get_space("mbv3-tiny"), "synthetic"))


class CountingEstimator(Evaluator):
    name, unit, direction, cheap = "accuracy", "%", "maximize", False

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, arch) -> float:
        self.calls += 1
        assert not any(k.startswith("hw.") for k in arch)  # the estimator sees the network only
        return float(sum(v for k, v in arch.items() if k.endswith("expand")))


def test_accuracy_is_shared_by_a_network_on_every_accelerator(rng) -> None:
    cs = get_space("codesign:mbv3-tiny")
    inner = CountingEstimator()
    shared = SharedNetworkAccuracy(inner, cs)
    arch = cs.sample(rng)
    values = {shared({**arch, "hw.pe_rows": r}) for r in HW_CHOICES["hw.pe_rows"]}
    assert len(values) == 1 and inner.calls == 1
    shared(cs.sample(rng))
    assert inner.calls == 2 and shared.direction == "maximize"


def test_co_search_end_to_end_meets_the_budgets(tmp_path) -> None:
    cfg = ExperimentConfig(space="codesign:tests.micro_space:micro_space", data="synthetic", estimator="proxy:params",
                           target="accel:eyeriss", objectives=["accuracy", "latency"],
                           constraints={"latency": 0.05, "pes": 168}, strategy="evolution", budget=8, seed=0,
                           out=str(tmp_path / "cs"))
    result = run_search(cfg)
    rows = [r for r in result.records if r.feasible]
    assert rows, "no feasible co-design found"
    for r in rows:
        assert r.metrics["latency"] <= 0.05 and r.metrics["pes"] <= 168
        assert r.arch["hw.pe_rows"] * r.arch["hw.pe_cols"] <= 168
    saved = json.loads((tmp_path / "cs" / "config.json").read_text())
    assert saved["space"] == "codesign:tests.micro_space:micro_space"
    with pytest.raises(EdgenasError, match="co-designs an accelerator: give --target accel:BASE"):
        run_search(ExperimentConfig(**{**cfg.__dict__, "target": "cpu", "out": str(tmp_path / "y")}))
    with pytest.raises(EdgenasError, match="can meet pes <= 32 PEs: the smallest architecture has pes 64"):
        run_search(ExperimentConfig(**{**cfg.__dict__, "constraints": {"pes": 32}, "out": str(tmp_path / "x")}))


def test_energy_is_an_objective_beside_an_accel_target(tmp_path, rng) -> None:
    from edgenas.hardware.accelerator import AcceleratorEnergy

    cs = get_space("codesign:mbv3-tiny")
    latency = make_target("accel:eyeriss", EvalContext(cs, "synthetic"))
    energy = AcceleratorEnergy.beside(latency)
    assert energy.name == "energy" and energy.direction == "minimize" and energy.instant
    arch = cs.sample(rng)
    acc = cs.accelerator(arch, load_accelerator("eyeriss"))
    expected = network_cost(acc, arch_ops(cs.network, cs.network_part(arch), 10))[1]["energy_uj"]
    assert energy(arch) == pytest.approx(expected, rel=1e-9)
    assert energy.evaluate_batch([arch]) == [pytest.approx(expected, rel=1e-9)]
    cfg = ExperimentConfig(space="codesign:tests.micro_space:micro_space", data="synthetic", estimator="proxy:params",
                           target="accel:eyeriss", objectives=["accuracy", "energy"], constraints={"pes": 256},
                           strategy="random", budget=3, seed=0, out=str(tmp_path / "e"))
    records = [r for r in run_search(cfg).records if r.feasible]
    assert records and all(r.metrics["energy"] > 0 for r in records)
    with pytest.raises(EdgenasError, match="'energy' comes from the accelerator model: give --target accel:NAME"):
        run_search(ExperimentConfig(space="tests.micro_space:micro_space", data="synthetic", estimator="proxy:params",
                                    target="cpu", objectives=["accuracy", "energy"], budget=1,
                                    out=str(tmp_path / "f")))


def test_naas_style_co_search_with_an_ofa_supernet_as_the_accuracy_estimator(micro, tmp_path) -> None:
    from edgenas.data import load_synthetic_dataset
    from edgenas.supernets.shrinking import ShrinkConfig, train_supernet

    data = load_synthetic_dataset().subset(64, 32)
    train_supernet(micro, data, tmp_path / "sn", ShrinkConfig(schedule="full:1", batch_size=16, eval_images=8))
    cfg = ExperimentConfig(space="codesign:tests.micro_space:micro_space", data="synthetic", max_train=64,
                           estimator=f"supernet:{tmp_path / 'sn'}", target="accel:eyeriss",
                           objectives=["accuracy", "energy"], constraints={"pes": 168}, strategy="nsga2",
                           budget=4, seed=0, out=str(tmp_path / "naas"))
    records = [r for r in run_search(cfg).records if r.feasible]
    assert records and all(0.0 <= r.metrics["accuracy"] <= 100.0 for r in records)
    assert all(r.metrics["pes"] <= 168 for r in records)
