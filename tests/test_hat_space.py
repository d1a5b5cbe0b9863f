"""The HAT SubTransformer space, its features, HAT's latency data sets and predictors fitted on them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenas.errors import EdgenasError, InvalidArchitecture
from edgenas.evaluators import EvalContext, make_target
from edgenas.hardware.datasets import read_latency_dataset
from edgenas.hardware.predictor import LatencyPredictor
from edgenas.spaces import get_space
from edgenas.spaces.transformer import FEATURES
from tests.conftest import REPO


@pytest.fixture
def hat():
    return get_space("hat-wmt14")


def small_arch(hat, decoder_layers: int = 2) -> dict:
    arch = {d.name: d.choices[0] for d in hat.dimensions}
    arch.update({"encoder_embed_dim": 640, "decoder_layer_num": decoder_layers, "enc1.ffn": 3072, "enc2.heads": 8,
                 "dec1.ffn": 1024, "dec2.ffn": 2048, "dec1.heads": 4, "dec2.ende_layers": 3, "dec3.ffn": 3072})
    return hat.validate(arch)


def write_hat_csv(path: Path, hat, archs: list[dict], encoder_ms: list[float], decoder_ms: list[float]) -> None:
    feats = hat.latency_features(archs)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*FEATURES, "latency_mean_encoder", "latency_mean_decoder", "latency_std_encoder",
                    "latency_std_decoder"])
        for row, e, d in zip(feats, encoder_ms, decoder_ms, strict=True):
            w.writerow([*(f"{v:.10g}" for v in row), e, d, 0.1, 0.2])


def test_space_size_activity_and_sampling(hat, rng):
    per_enc, per_dec = 4 * 3, 4 * 3 * 3 * 3
    assert hat.size() == 4 * per_enc ** 6 * sum(per_dec ** d for d in range(1, 7))
    a = small_arch(hat, decoder_layers=2)
    assert "dec3.ffn" not in hat.active_names(a) and "dec2.ffn" in hat.active_names(a)
    assert hat.key(a) == hat.key({**a, "dec3.ffn": 512})  # an inactive layer's choice does not matter
    assert hat.key(a) != hat.key({**a, "dec2.ffn": 512})
    for _ in range(20):
        hat.validate(hat.sample(rng))
    with pytest.raises(InvalidArchitecture, match=r"decoder layer 1 heads 3 not in \{2, 4, 8\}"):
        hat.validate({**a, "dec1.heads": 3})
    with pytest.raises(InvalidArchitecture, match="has no build function for image classifiers"):
        hat.build(a, num_classes=10)
    from edgenas.experiment import Experiment, ExperimentConfig

    with pytest.raises(InvalidArchitecture, match="has no build function for image classifiers"):
        Experiment(ExperimentConfig(space="hat-wmt14", data="synthetic", estimator="proxy:params", budget=1,
                                    out="unused"))


def test_latency_features_are_hats_averages(hat):
    f = dict(zip(FEATURES, hat.latency_features([small_arch(hat)])[0], strict=True))
    assert f["encoder_embed_dim"] == 640 and f["decoder_embed_dim"] == 512
    assert f["encoder_layer_num"] == 6 and f["decoder_layer_num"] == 2
    assert f["encoder_ffn_embed_dim_avg"] == pytest.approx((3072 + 5 * 512) / 6)
    assert f["encoder_self_attention_heads_avg"] == pytest.approx((8 + 5 * 2) / 6)
    assert f["decoder_ffn_embed_dim_avg"] == 1536  # dec3's 3072 is inactive
    assert f["decoder_self_attention_heads_avg"] == 3 and f["decoder_ende_attention_heads_avg"] == 2
    assert f["decoder_arbitrary_ende_attn_avg"] == 2


def test_from_features_inverts_the_features(hat, rng):
    archs = [hat.sample(rng) for _ in range(50)]
    feats = hat.latency_features(archs)
    back = [hat.from_features(dict(zip(FEATURES, row, strict=True))) for row in feats]
    np.testing.assert_allclose(hat.latency_features(back), feats, rtol=0, atol=1e-9)
    row = dict(zip(FEATURES, feats[0], strict=True))
    with pytest.raises(InvalidArchitecture, match="encoder_ffn_embed_dim_avg 600 is not the mean of 6 choices"):
        hat.from_features({**row, "encoder_ffn_embed_dim_avg": 600})
    with pytest.raises(InvalidArchitecture, match="encoder_layer_num 4 is not 6"):
        hat.from_features({**row, "encoder_layer_num": 4})
    with pytest.raises(InvalidArchitecture, match="lack decoder_layer_num"):
        hat.from_features({k: v for k, v in row.items() if k != "decoder_layer_num"})


def test_macs_grow_with_what_costs(hat):
    a = small_arch(hat, decoder_layers=2)
    base = hat.macs(a)
    assert hat.macs({**a, "enc3.ffn": 3072}) > base
    assert hat.macs({**a, "decoder_layer_num": 3}) > base
    assert hat.macs({**a, "dec1.ende_layers": 3}) > base
    assert hat.macs({**a, "dec1.heads": 8}) == base  # heads split a fixed width: same arithmetic
    assert hat.macs(a, source_tokens=60) > base


def test_reads_a_hat_csv_and_fits_a_predictor_target(hat, rng, tmp_path):
    archs = [hat.sample(rng) for _ in range(80)]
    feats = hat.latency_features(archs)
    enc = 50 + feats[:, 2] / 20 + rng.normal(0, 0.5, len(archs))
    dec = 100 + 40 * feats[:, 5] + feats[:, 6] / 10 + rng.normal(0, 0.5, len(archs))
    path = tmp_path / "hat.csv"
    write_hat_csv(path, hat, archs, list(enc), list(dec))
    data = read_latency_dataset(path, hat)
    assert len(data) == 80 and data.column == "latency_mean_encoder+latency_mean_decoder"
    np.testing.assert_allclose(data.latency_ms, enc + dec)
    np.testing.assert_allclose(hat.latency_features(data.archs), feats, atol=1e-6)
    np.testing.assert_allclose(read_latency_dataset(path, hat, column="latency_mean_encoder").latency_ms, enc)
    with pytest.raises(EdgenasError, match="no latency column 'latency_p99'"):
        read_latency_dataset(path, hat, column="latency_p99")
    partial = tmp_path / "partial.csv"
    partial.write_text("encoder_embed_dim,encoder_layer_num,latency_ms\n512,6,10\n")
    with pytest.raises(EdgenasError, match="needs an 'arch' column or the feature columns; missing "
                                           "encoder_ffn_embed_dim_avg, encoder_self_attention_heads_avg"):
        read_latency_dataset(partial, hat)

    pred = LatencyPredictor(hat, "linear", folds=0).fit(data.archs[:60], data.latency_ms[:60])
    held_out = pred.predict(data.archs[60:])
    assert np.median(np.abs(held_out / data.latency_ms[60:] - 1)) < 0.02
    pred.save(tmp_path / "p.npz")
    target = make_target(f"predictor:{tmp_path / 'p.npz'}", EvalContext(hat, "synthetic"))
    assert target(archs[70]) == pytest.approx(held_out[10], rel=1e-9)


def test_latency_fit_command_on_a_hat_csv(hat, rng, tmp_path):
    archs = [hat.sample(rng) for _ in range(40)]
    feats = hat.latency_features(archs)
    write_hat_csv(tmp_path / "hat.csv", hat, archs, list(10 + feats[:, 2] / 100), list(30 + 5 * feats[:, 5]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "edgenas", "latency", "fit", "--space", "hat-wmt14", "--dataset",
                          str(tmp_path / "hat.csv"), "--model", "linear", "--holdout", "10", "--out",
                          str(tmp_path / "p.npz")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "p.npz").is_file() and '"spearman"' in run.stdout


@pytest.mark.parametrize("device", ["cpu_raspberrypi", "cpu_xeon", "gpu_titanxp"])
def test_every_row_of_hats_data_sets_is_an_arch_of_the_space(hat, shared_data, device):
    path = shared_data / "hat" / f"wmt14ende_{device}.csv"
    data = read_latency_dataset(path, hat)
    assert len(data) == 2000 and not data.skipped
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = np.array([[float(r[c]) for c in FEATURES] for r in rows])
    np.testing.assert_allclose(hat.latency_features(data.archs), expected, rtol=1e-9)
    total = np.array([float(r["latency_mean_encoder"]) + float(r["latency_mean_decoder"]) for r in rows])
    np.testing.assert_allclose(data.latency_ms, total)
