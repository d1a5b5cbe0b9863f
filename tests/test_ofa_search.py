"""Once-for-All specialisation: gene encoding, accuracy predictor, vectorised finder, end-to-end specialise."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from edgenas.errors import EdgenasError
from edgenas.estimators.accuracy_predictor import AccuracyPredictor, GeneCodec
from edgenas.search.ofa_evolution import BudgetUnreachable, EvolutionConfig, GenePool, evolve
from edgenas.spaces import get_space

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return get_space("mbv3-tiny")


def test_genes_round_trip_and_features_match_the_space_encoding(tiny):
    codec = GeneCodec(tiny)
    rng = np.random.default_rng(0)
    archs = [tiny.sample(rng) for _ in range(30)]
    genes = codec.to_genes(archs)
    assert [tiny.key(a) for a in codec.to_archs(genes)] == [tiny.key(a) for a in archs]
    F = codec.features(genes)
    ref = np.stack([tiny.encode(a) for a in archs])
    # same one-hot entries (the column order differs): compare the sets of active dimension/choice pairs
    assert F.sum(axis=1).tolist() == ref.sum(axis=1).tolist()
    names = codec.names
    for row, arch in zip(F, archs, strict=True):
        gene = [int(np.searchsorted(codec.offsets, c, side="right") - 1) for c in np.flatnonzero(row)]
        on = {(names[g], int(c - codec.offsets[g])) for g, c in zip(gene, np.flatnonzero(row), strict=True)}
        canon = tiny.validate(arch)
        assert on == {(n, tiny[n].choices.index(canon[n])) for n in tiny.active_names(arch)}


def test_predictor_learns_an_additive_accuracy_and_saves_safely(tiny, tmp_path):
    codec = GeneCodec(tiny)
    rng = np.random.default_rng(1)
    genes = codec.random(400, rng)
    w = rng.normal(size=codec.n_features)
    y = 60 + codec.features(genes) @ w + rng.normal(0, 0.1, len(genes))
    pred = AccuracyPredictor(tiny, epochs=300).fit(genes[:300], y[:300])
    p = pred.predict(genes[300:])
    from scipy.stats import spearmanr

    assert spearmanr(p, y[300:])[0] > 0.9
    # dicts and gene rows give the same answer
    archs = codec.to_archs(genes[300:310])
    assert np.allclose(pred.predict(archs), p[:10])
    pred.save(tmp_path / "acc.npz")
    loaded = AccuracyPredictor.load(tmp_path / "acc.npz", tiny)
    assert np.allclose(loaded.predict(genes[300:]), p, atol=1e-9)
    with pytest.raises(EdgenasError, match="trained for space 'mbv3-tiny', not for space 'micro'"):
        AccuracyPredictor.load(tmp_path / "acc.npz", get_space("tests.micro_space:micro_space"))
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(EdgenasError, match="accuracy predictor '.*bad.npz' is corrupted or truncated"):
        AccuracyPredictor.load(tmp_path / "bad.npz", tiny)


def _toy_models(space):
    """Accuracy grows with every choice; latency grows with them too (a trade-off to search)."""
    codec = GeneCodec(space)
    weights = np.linspace(0.5, 1.5, codec.G)

    def acc(genes: np.ndarray) -> np.ndarray:
        act = np.ones_like(genes, dtype=float)
        act[:, codec.sl_k] = codec.active(genes)
        act[:, codec.sl_e] = codec.active(genes)
        return (genes * weights * act).sum(axis=1)

    def lat(genes: np.ndarray) -> np.ndarray:
        act = np.ones_like(genes, dtype=float)
        act[:, codec.sl_k] = codec.active(genes)
        act[:, codec.sl_e] = codec.active(genes)
        return 1.0 + (genes * act).sum(axis=1) * 0.1

    return codec, acc, lat


def test_evolution_respects_the_budget_and_beats_random(tiny):
    codec, acc, lat = _toy_models(tiny)
    budget = 4.0
    res = evolve(codec, acc, lat, budget, EvolutionConfig(generations=60, seed=0))
    assert res.latency <= budget and lat(res.genes[None])[0] <= budget + 1e-9
    assert res.candidates == 100 + 60 * 100
    rand = codec.random(5000, np.random.default_rng(0))
    ok = lat(rand) <= budget
    assert res.accuracy >= acc(rand[ok]).max()
    assert res.history == sorted(res.history)  # the best never gets worse


def test_evolution_with_restricted_choices_and_unreachable_budget(tiny):
    codec, acc, lat = _toy_models(tiny)
    allowed = {"resolution": [1, 3], "width": [0]}
    res = evolve(codec, acc, lat, 5.0, EvolutionConfig(generations=20), allowed=allowed)
    assert res.genes[0] in (1, 3) and res.genes[1] == 0
    pool = GenePool(codec, allowed)
    assert set(pool.random(200, np.random.default_rng(0))[:, 0]) == {1, 3}
    with pytest.raises(BudgetUnreachable, match=r"no subnet meets 0.5 ms on toy: the fastest reached is 1 ms"):
        evolve(codec, acc, lat, 0.5, EvolutionConfig(generations=5), target_name="toy")


def test_batched_lut_latency_equals_the_table(tiny, micro):
    from edgenas.evaluators import EvalContext, make_target
    from edgenas.hardware.layers import MBV3Layers
    from edgenas.hardware.lut import LatencyTable, native_keys
    from edgenas.search.ofa_evolution import batched_latency

    layers = MBV3Layers(micro, 10, 3)
    rng = np.random.default_rng(0)
    entries = {lay.key: {"median": float(rng.uniform(0.01, 0.1))} for lay in layers.layers}
    table = LatencyTable(entries, {"space": "micro", "space_config": micro.to_dict(), "num_classes": 10},
                         keys_for=native_keys)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/lut.json"
        table.save(path)
        ctx = EvalContext(micro, data_spec="synthetic")
        ev = make_target(f"lut:{path}", ctx)
        codec = GeneCodec(micro)
        fn, how = batched_latency(ev, codec, 10, 3)
        genes = codec.random(50, rng)
        assert how == "lut"
        assert np.allclose(fn(genes), ev.predict(codec.to_archs(genes)))


def test_specialize_end_to_end(micro, tmp_path):
    from edgenas.data import load_synthetic_dataset
    from edgenas.supernets.shrinking import ShrinkConfig, train_supernet
    from edgenas.supernets.specialize import specialize

    data = load_synthetic_dataset(n=96, classes=4, size=12).subset(64, 32)
    res = train_supernet(micro, data, tmp_path / "sn", ShrinkConfig(schedule="full:1,expand:1", batch_size=16,
                                                                    eval_images=16))
    out = tmp_path / "spec"
    rep = specialize(res.supernet, data, "synthetic", ["raspi4", "zu3eg"], [0.004, 0.002], out, pairs=12, recal=32,
                     generations=10, population=20)
    assert len(rep.rows) == 2 and all(r["meets_budget"] for r in rep.rows)
    for row in rep.rows:
        assert row["latency_ms"] <= row["budget_ms"]
        assert (out / f"subnet_{row['target']}.onnx").exists() and row["onnxruntime_max_abs_diff"] < 1e-4
    assert set(rep.cross) == {"raspi4", "zu3eg"} and set(rep.cross["raspi4"]) == {"raspi4", "zu3eg"}
    assert "subnet found for" in (out / "report.md").read_text()
    saved = json.loads((out / "report.json").read_text())
    assert saved["budgets_ms"] == [0.004, 0.002]
    assert (out / "accuracy_predictor.npz").exists() and (out / "accuracy_pairs.jsonl").exists()
    # an unreachable budget: a clear error naming the fastest latency reached; the pairs are kept
    with pytest.raises(EdgenasError, match="no subnet meets 1e-06 ms on raspi4: the fastest reached is"):
        specialize(res.supernet, data, "synthetic", ["raspi4"], [1e-6], out, pairs=12, recal=32, generations=5,
                   population=20)
    assert len((out / "accuracy_pairs.jsonl").read_text().splitlines()) == 12


def test_sharded_accuracy_pairs_are_gathered_without_measuring_again(micro, tmp_path, monkeypatch):
    from edgenas.data import load_synthetic_dataset
    from edgenas.supernets import specialize as spec
    from edgenas.supernets.shrinking import ShrinkConfig, train_supernet

    data = load_synthetic_dataset(n=96, classes=4, size=12).subset(64, 32)
    net = train_supernet(micro, data, tmp_path / "sn", ShrinkConfig(schedule="full:1", batch_size=16,
                                                                    eval_images=8)).supernet
    whole, whole_acc = spec.measure_pairs(net, data, 7, seed=3, recal=16)
    shards = [spec.measure_pairs(net, data, 7, 3, 16, cache=tmp_path / f"p.{i}.jsonl", shard=(i, 3))
              for i in range(3)]
    assert [len(a) for a, _ in shards] == [3, 2, 2]
    assert [micro.key(a) for a in shards[1][0]] == [micro.key(a) for a in whole[1::3]]

    def no_measuring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a cached pair was measured again")

    monkeypatch.setattr(spec, "subnet_hits", no_measuring)
    archs, accs = spec.measure_pairs(net, data, 7, 3, 16, cache=tmp_path / "p.jsonl",
                                     extra_caches=sorted(tmp_path.glob("p.*.jsonl")))
    assert [micro.key(a) for a in archs] == [micro.key(a) for a in whole]
    assert np.allclose(accs, whole_acc)


def test_pairs_keep_per_image_hits_for_the_noise_estimate(micro, tmp_path, monkeypatch):
    """keep_hits stores which validation images each subnet gets right, consistent with its accuracy;
    cached pairs without them are measured again, pairs with them are not."""
    from edgenas.data import load_synthetic_dataset
    from edgenas.supernets import specialize as spec
    from edgenas.supernets.shrinking import ShrinkConfig, train_supernet

    data = load_synthetic_dataset(n=96, classes=4, size=12).subset(64, 32)
    net = train_supernet(micro, data, tmp_path / "sn", ShrinkConfig(schedule="full:1", batch_size=16,
                                                                    eval_images=8)).supernet
    n_val = len(data.x_val)
    plain, plain_acc = spec.measure_pairs(net, data, 4, seed=5, recal=16, cache=tmp_path / "h.jsonl")
    assert spec.cached_hits(net, plain, n_val, [tmp_path / "h.jsonl"]) is None
    calls = []
    real = spec.subnet_hits
    monkeypatch.setattr(spec, "subnet_hits", lambda *a, **k: calls.append(1) or real(*a, **k))
    archs, accs = spec.measure_pairs(net, data, 4, seed=5, recal=16, cache=tmp_path / "h.jsonl", keep_hits=True)
    assert len(calls) == 4 and np.allclose(accs, plain_acc)
    hits = spec.cached_hits(net, archs, n_val, [tmp_path / "h.jsonl"])
    assert hits.shape == (4, n_val) and hits.dtype == bool
    assert spec.cached_hits(net, archs, n_val - 1, [tmp_path / "h.jsonl"]) is None  # other images: not these
    assert np.allclose(hits.mean(axis=1) * 100, accs)
    for arch, row in zip(archs, hits, strict=True):
        model, acc = spec.evaluate_subnet(net, arch, data, 16, None, 5)
        _, x_val = data.at_resolution(micro.resolution(arch))
        assert np.array_equal(row, (model.eval()(x_val).argmax(1) == data.y_val).numpy())
    calls.clear()
    spec.measure_pairs(net, data, 4, seed=5, recal=16, cache=tmp_path / "h.jsonl", keep_hits=True)
    assert not calls  # nothing measured again
    bits = np.array([True, False, True, True, False, False, False, True, True, False, True])
    assert np.array_equal(spec.unpack_hits(spec.pack_hits(bits), len(bits)), bits)
    with pytest.raises(EdgenasError, match="cannot hold 20 images"):
        spec.unpack_hits(spec.pack_hits(bits), 20)


# ------------------------------------------------------------------------------------------------ CLI
def _cli(*args: str):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgenas", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_train_then_bad_inputs_exit_2(tmp_path):
    out = tmp_path / "sn"
    ok = _cli("ofa", "train", "--space", "tests.micro_space:micro_space", "--data", "synthetic", "--schedule",
              "full:1", "--max-train", "48", "--max-val", "16", "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert (out / "supernet.pt").exists() and (out / "curves.png").exists()
    again = _cli("ofa", "train", "--space", "tests.micro_space:micro_space", "--data", "synthetic", "--schedule",
                 "full:1", "--max-train", "48", "--max-val", "16", "--out", str(out))
    last = again.stderr.strip().splitlines()[-1]
    assert again.returncode == 2 and last.startswith("edgenas: error:") and "--resume" in last
    wrong = _cli("ofa", "specialize", "--supernet", str(out), "--data", "digits", "--targets", "raspi4",
                 "--latency-ms", "1", "--out", str(tmp_path / "spec"))
    assert wrong.returncode == 2 and "trained for 10 classes" in wrong.stderr
    bad = _cli("ofa", "specialize", "--supernet", str(tmp_path / "nothing"), "--data", "synthetic", "--targets",
               "raspi4", "--latency-ms", "1", "--out", str(tmp_path / "spec"))
    assert bad.returncode == 2 and "not found" in bad.stderr
    device = _cli("ofa", "train", "--space", "tests.micro_space:micro_space", "--data", "synthetic", "--device",
                  "gpu0", "--out", str(tmp_path / "dev"))
    assert device.returncode == 2 and "unknown device 'gpu0'; use cpu, cuda" in device.stderr
    assert not (tmp_path / "dev").exists()
    on_cpu = _cli("ofa", "predictor", "--supernet", str(out), "--data", "synthetic", "--max-train", "48",
                  "--max-val", "16", "--pairs", "10", "--holdout", "5", "--recal", "16", "--device", "auto",
                  "--out", str(tmp_path / "acc.npz"))
    assert on_cpu.returncode == 0, on_cpu.stderr
    assert (tmp_path / "acc.npz").exists()
    assert "on 5 held-out subnets: Spearman" in on_cpu.stdout
    assert "measurement noise" in on_cpu.stdout and "on 16 validation images" in on_cpu.stdout


def test_supernet_estimator_in_a_search(micro, tmp_path):
    from edgenas.data import load_synthetic_dataset
    from edgenas.evaluators import EvalContext, make_estimator
    from edgenas.supernets.shrinking import ShrinkConfig, train_supernet

    data = load_synthetic_dataset().subset(64, 32)
    train_supernet(micro, data, tmp_path / "sn", ShrinkConfig(schedule="full:1", batch_size=16, eval_images=8))
    ctx = EvalContext(micro, data_spec="synthetic", max_train=64)
    est = make_estimator(f"supernet:{tmp_path / 'sn'}", ctx)
    acc = est(micro.sample(np.random.default_rng(0)))
    assert 0.0 <= acc <= 100.0 and est.name == "accuracy"
    with pytest.raises(EdgenasError, match="was built for space 'micro'"):
        make_estimator(f"supernet:{tmp_path / 'sn'}", EvalContext(get_space("mbv3-tiny"), data_spec="synthetic"))


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'edgenas[ray]')")
def test_predictor_pairs_on_ray_workers_equal_one_process(tmp_path):
    """--workers 2 measures the pairs as two Ray tasks and merges their shards into the one cache; the pairs
    (and so the predictor) are those of a one-process run."""
    sn = tmp_path / "sn"
    common = ("--data", "synthetic", "--max-train", "48", "--max-val", "16")
    ok = _cli("ofa", "train", "--space", "tests.micro_space:micro_space", *common, "--schedule", "full:1",
              "--out", str(sn))
    assert ok.returncode == 0, ok.stderr
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}" / "acc.npz"
        r = _cli("ofa", "predictor", "--supernet", str(sn), *common, "--pairs", "11", "--holdout", "3", "--recal",
                 "16", "--workers", str(workers), "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert not list(out.parent.glob("*.shard*.jsonl"))  # merged, then removed
        rows = [json.loads(line) for line in out.with_name("acc_pairs.jsonl").read_text().splitlines()]
        runs[workers] = {json.dumps(row["arch"], sort_keys=True): row["accuracy"] for row in rows}
        assert len(out.with_name("acc_holdout.jsonl").read_text().splitlines()) == 3
    assert len(runs[1]) == 11 and runs[2] == pytest.approx(runs[1])
    gpu = _cli("ofa", "predictor", "--supernet", str(sn), *common, "--workers", "2", "--device", "cuda",
               "--out", str(tmp_path / "g.npz"))
    assert gpu.returncode == 2 and "CPU Ray workers" in gpu.stderr
