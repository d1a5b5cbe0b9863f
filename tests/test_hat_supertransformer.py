"""HAT's SuperTransformer: elastic dimensions, extraction, training and resume, search, data, latency, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgenas.errors import EdgenasError
from edgenas.models.transformer import build_subtransformer, build_supertransformer
from edgenas.spaces import get_space
from edgenas.spaces.transformer import FEATURES
from edgenas.supernets.hat import (
    HATTrainConfig,
    load_supertransformer,
    train_subtransformer,
    train_supertransformer,
    validation_loss,
)
from edgenas.supernets.hat_search import BudgetUnreachable, HATSearchConfig, evolutionary_search
from edgenas.translation_data import bigram_task, corpus_bleu, load_parallel, read_tsv, reverse_task
from tests.conftest import REPO


@pytest.fixture(scope="module")
def space():
    return get_space("hat-tiny")


@pytest.fixture(scope="module")
def data():
    return reverse_task(n=400, seed=1)


def batch(data, n: int = 6):
    src, tgt = data.val.batches(n)[0]
    return src, tgt[:, :-1]


def test_an_extracted_subtransformer_computes_what_the_supertransformer_computes(space, data):
    net = build_supertransformer(space, data.src_vocab, data.tgt_vocab).eval()
    src, tgt_in = batch(data)
    rng = np.random.default_rng(0)
    outputs = []
    for _ in range(4):
        arch = space.sample(rng)
        net.set_active(arch)
        expected = net(src, tgt_in)
        sub = net.extract(arch).eval()
        assert torch.allclose(sub(src, tgt_in), expected, atol=1e-6)
        assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.parameters())
        outputs.append(expected)
    assert not torch.allclose(outputs[0], outputs[1])


def test_each_choice_changes_exactly_its_own_layers(space, data):
    net = build_supertransformer(space, data.src_vocab, data.tgt_vocab).eval()
    src, tgt_in = batch(data)
    base = space.validate({**space.extreme(smallest=False), "decoder_layer_num": 2})

    def out(**change):
        net.set_active({**base, **change})
        return net(src, tgt_in)

    ref = out()
    assert torch.equal(out(**{"dec3.ffn": 64, "dec3.heads": 2}), ref)  # decoder layer 3 is inactive
    for change in ({"enc1.ffn": 64}, {"enc2.heads": 2}, {"dec2.ende_layers": 1}, {"dec1.ende_heads": 2},
                   {"decoder_embed_dim": 48}, {"decoder_layer_num": 3}):
        assert not torch.allclose(out(**change), ref), change
    # a smaller FFN uses the front hidden units: the units behind them do not matter to it
    small = out(**{"enc1.ffn": 64})
    with torch.no_grad():
        net.encoder[0].ffn.fc1.weight[64:].normal_()
        net.encoder[0].ffn.fc2.weight[:, 64:].normal_()
    assert torch.equal(out(**{"enc1.ffn": 64}), small)
    assert not torch.allclose(out(), ref)


def test_corpus_bleu_by_hand():
    assert corpus_bleu([[4, 5, 6, 7]], [[4, 5, 6, 7]]) == pytest.approx(100.0)
    assert corpus_bleu([[4, 5, 6, 7]], [[8, 9, 10, 11]]) == 0.0
    # 5 of 6 unigrams, 3/5 bigrams, 2/4 trigrams, 1/3 4-grams; hypothesis as long as the reference
    hyp, ref = [1, 2, 3, 4, 9, 6], [1, 2, 3, 4, 5, 6]
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu([hyp], [ref]) == pytest.approx(expected)
    assert corpus_bleu([ref[:4]], [ref]) == pytest.approx(100 * np.exp(1 - 6 / 4))  # brevity penalty


def test_the_bigram_task_translates_adjacent_pairs_backwards_by_one_table():
    d = bigram_task(n=300, words=6, seed=2)
    table: dict[tuple[int, int], int] = {}
    for split in (d.train, d.val, d.test):
        for src, tgt in zip(split.src.tolist(), split.tgt.tolist(), strict=True):
            s = [w for w in src if w]
            t = tgt[1:tgt.index(2)]  # between begin and end
            assert len(t) == len(s) - 1 and 4 <= len(s) <= 13
            for (a, b), out in zip(reversed(list(zip(s[:-1], s[1:], strict=True))), t, strict=True):
                assert table.setdefault((a, b), out) == out  # one fixed target word per source pair
    assert len(table) == 36 and len(set(table.values())) > 1
    assert load_parallel("bigram").name == "bigram"
    with pytest.raises(EdgenasError, match="use reverse or bigram"):
        load_parallel("copy")


def test_tsv_parallel_data_and_its_errors(tmp_path):
    good = tmp_path / "pairs.tsv"
    good.write_text("".join(f"a b c{i % 3}\tx y z{i % 3}\n" for i in range(30)))
    d = read_tsv(str(good))
    assert (len(d.train), len(d.val), len(d.test)) == (24, 3, 3)
    assert {"a", "b", "c0"} <= set(d.src_words) and {"x", "y", "z0"} <= set(d.tgt_words)
    assert d.decode(d.val.tgt[0, 1:].tolist()).startswith("x y z")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a b\tc d\njust one side\n")
    with pytest.raises(EdgenasError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
        read_tsv(str(bad))
    with pytest.raises(EdgenasError, match="not found"):
        read_tsv(str(tmp_path / "none.tsv"))


def test_training_learns_and_an_interrupted_run_resumes_exactly(space, data, tmp_path):
    cfg = HATTrainConfig(steps=12, batch_size=16, eval_every=6, checkpoint_every=4, warmup=3, seed=3)
    whole = train_supertransformer(space, data, tmp_path / "whole", cfg)
    assert whole["history"][-1]["val_loss_largest"] < np.log(data.tgt_vocab)  # below uniform guessing

    def interrupt(message):
        raise KeyboardInterrupt(message)

    with pytest.raises(KeyboardInterrupt, match="step 6/12"):  # stopped at step 6: the step-4 checkpoint remains
        train_supertransformer(space, data, tmp_path / "half", cfg, progress=interrupt)
    assert torch.load(tmp_path / "half" / "last.pt", weights_only=True)["step"] == 4
    with pytest.raises(EdgenasError, match="trained with other settings"):
        train_supertransformer(space, data, tmp_path / "half", HATTrainConfig(**{**cfg.__dict__, "lr": 0.1}),
                               resume=True)
    resumed = train_supertransformer(space, data, tmp_path / "half", cfg, resume=True)
    assert [h["step"] for h in resumed["history"]] == [6, 12]
    assert resumed["val_loss_largest"] == pytest.approx(whole["val_loss_largest"], abs=1e-5)
    net_a, _ = load_supertransformer(tmp_path / "whole")
    net_b, _ = load_supertransformer(tmp_path / "half")
    for (name, a), (_, b) in zip(net_a.state_dict().items(), net_b.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(EdgenasError, match="was built for space 'hat-tiny' with 28 source and 28 target words, "
                                           "not for space 'hat-wmt14'"):
        load_supertransformer(tmp_path / "whole", get_space("hat-wmt14"))
    with pytest.raises(EdgenasError, match="was built for"):
        train_supertransformer(space, reverse_task(n=100, words=10), tmp_path / "whole", cfg, resume=True)


def test_evolution_respects_the_budget_and_improves(space):
    def latency(archs):
        return np.array([space.macs(a) for a in archs]) / 1e5

    def score(archs):  # reward FFN width, which costs latency
        return np.array([sum(a[f"enc{i}.ffn"] for i in range(1, 4)) + 0.0 for a in archs])

    budget = float(np.median(latency([space.sample(np.random.default_rng(i)) for i in range(50)])))
    cfg = HATSearchConfig(parents=4, mutations=8, crossovers=8, generations=6, seed=0)
    res = evolutionary_search(space, score, latency, budget, cfg)
    assert res.latency <= budget and latency([res.arch])[0] == pytest.approx(res.latency)
    assert res.history[-1]["best_score"] >= res.history[0]["best_score"]
    assert res.score == 3 * 256  # the widest encoder FFNs fit: the search finds them
    smallest = latency([space.extreme(smallest=True)])[0]
    with pytest.raises(BudgetUnreachable, match=rf"the smallest SubTransformer: {smallest:.4g} ms\); raise"):
        evolutionary_search(space, score, latency, smallest * 0.5, cfg)


def test_an_answer_measured_above_the_budget_is_searched_again_tighter(space):
    from edgenas.supernets.hat_search import search_and_verify

    def latency(archs):
        return np.array([space.macs(a) for a in archs]) / 1e5

    def score(archs):
        return np.array([space.macs(a) for a in archs])  # the search runs to the edge of the budget

    budget = float(np.median(latency([space.sample(np.random.default_rng(i)) for i in range(50)])))
    cfg = HATSearchConfig(parents=4, mutations=8, crossovers=8, generations=4, seed=0)
    checked = search_and_verify(space, score, latency, budget, cfg, measure=lambda a: 1.1 * latency([a])[0])
    assert checked.measured <= budget and len(checked.rounds) >= 2
    first = checked.rounds[0]
    assert checked.rounds[1]["budget_ms"] == pytest.approx(budget * first["predicted_ms"] / first["measured_ms"])
    slow = search_and_verify(space, score, latency, budget, cfg, measure=lambda a: 1.5 * latency([a])[0],
                             max_rounds=2)
    assert len(slow.rounds) == 2  # gives up after max_rounds
    # the corrected budget is below every prediction: one more search at the fastest latency seen, then stop
    hopeless = search_and_verify(space, score, latency, budget, cfg, measure=lambda a: 10.0 * budget)
    assert len(hopeless.rounds) == 2 and hopeless.measured > budget
    assert hopeless.rounds[1]["predicted_ms"] < 0.9 * hopeless.rounds[0]["predicted_ms"]


def test_subtransformer_latency_is_measured_in_a_fresh_process_and_collections_resume(space, tmp_path, monkeypatch):
    from edgenas.hardware import transformer_latency as tl

    ms = tl.measure_translation(space, space.extreme(smallest=True), tl.TranslationTiming(runs=3, warmup=1))
    assert 0 < ms["latency_mean_encoder"] < ms["latency_mean_decoder"]  # 12 decoder steps vs one encoder pass
    calls = []

    def fake(sp, arch, timing=None):
        calls.append(sp.key(arch))
        return {c: float(len(calls)) for c in tl.LATENCY_COLUMNS}

    monkeypatch.setattr(tl, "measure_translation", fake)
    path = str(tmp_path / "lat.csv")
    tl.collect_dataset(space, 3, path)
    rows = tl.collect_dataset(space, 5, path)  # continues: measures only the two new ones
    assert len(calls) == 5 and len(rows) == 5 and [float(r["latency_mean_encoder"]) for r in rows] == [1, 2, 3, 4, 5]
    with pytest.raises(EdgenasError, match="row 4 is not the SubTransformer this space and seed draw"):
        tl.collect_dataset(space, 5, path, seed=7)


def test_latency_fit_and_eval_measure_subtransformers(tmp_path, monkeypatch):
    """`edgenas latency fit|eval --measure N` on a HAT space measures SubTransformers (HAT-format CSV), as
    `edgenas hat measure` does, then fits / evaluates on them."""
    from typer.testing import CliRunner

    import edgenas.hardware.transformer_latency as tl
    from edgenas.cli import app

    timed = []

    def fake(space, arch, timing=None):  # latency in proportion to MACs, to be quick
        timed.append(timing)
        return {"latency_mean_encoder": 0.5, "latency_mean_decoder": space.macs(arch) / 1e5,
                "latency_std_encoder": 0.0, "latency_std_decoder": 0.0}

    monkeypatch.setattr(tl, "measure_translation", fake)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["latency", "fit", "--space", "hat-tiny", "--measure", "12", "--measured-out",
                                 "m.csv", "--model", "linear", "--out", "p.npz"])
    assert r.exit_code == 0, r.output
    assert len(timed) == 12 and timed[0].src_vocab == 28  # the vocabulary of the built-in 'reverse' data
    assert len((tmp_path / "m.csv").read_text().strip().splitlines()) == 13
    r = CliRunner().invoke(app, ["latency", "eval", "--space", "hat-tiny", "--predictor", "p.npz", "--measure", "5",
                                 "--measured-out", "e.csv"])
    assert r.exit_code == 0, r.output
    fidelity = json.loads(r.output[r.output.index("{"):])
    assert fidelity["n"] == 5 and fidelity["spearman"] > 0.99 and fidelity["mape_pct"] < 10
    r = CliRunner().invoke(app, ["latency", "fit", "--space", "hat-tiny", "--measure", "3", "--measured-out",
                                 "m.jsonl", "--out", "q.npz"])
    assert isinstance(r.exception, EdgenasError) and "a CSV in HAT's format" in str(r.exception)  # exit 2 via main


def test_cli_train_measure_fit_search_export(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "edgenas", *args], capture_output=True, text=True, cwd=tmp_path)

    r = run("hat", "train", "--out", "st", "--steps", "8", "--eval-every", "4", "--max-train", "300",
            "--batch-size", "16")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "st" / "supertransformer.pt").exists() and (tmp_path / "st" / "curve.png").exists()
    r = run("hat", "measure", "--out", "measured.csv", "--n", "2", "--runs", "2")
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "measured.csv").read_text().strip().splitlines()) == 3
    # a predictor fitted on a file of the same format (latency in proportion to MACs, to be quick)
    from edgenas.hardware.transformer_latency import _write

    sp = get_space("hat-tiny")
    archs = [sp.sample(np.random.default_rng(i)) for i in range(16)]
    feats = sp.latency_features(archs)
    _write(str(tmp_path / "lat.csv"), [{**dict(zip(FEATURES, f, strict=True)), "latency_mean_encoder": 0.5,
                                        "latency_mean_decoder": sp.macs(a) / 1e5, "latency_std_encoder": 0,
                                        "latency_std_decoder": 0} for a, f in zip(archs, feats, strict=True)])
    r = run("latency", "fit", "--space", "hat-tiny", "--dataset", "lat.csv", "--out", "lat.npz", "--model", "linear")
    assert r.returncode == 0, r.stderr
    r = run("hat", "search", "--supernet", "st", "--target", "predictor:lat.npz", "--latency-ms", "1000",
            "--out", "found", "--generations", "2", "--parents", "2", "--mutations", "2", "--crossovers", "2",
            "--max-val", "20")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "found" / "search.json").read_text())
    assert result["predicted_latency_ms"] <= 1000 and result["onnxruntime_max_abs_diff"] < 1e-4
    get_space("hat-tiny").validate(json.loads((tmp_path / "found" / "arch.json").read_text())["arch"])
    # bad input: one line, exit 2
    for args, message in [
        (("--target", "cpu", "--latency-ms", "5"), "unknown HAT target 'cpu'"),
        (("--target", "predictor:lat.npz", "--latency-ms", "0.001"), "no SubTransformer meets 0.001 ms"),
    ]:
        r = run("hat", "search", "--supernet", "st", "--out", "x", *args)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 2 and last.startswith("edgenas: error:") and message in last, r.stderr
    r = run("hat", "search", "--supernet", str(REPO / "README.md"), "--target", "predictor:lat.npz",
            "--latency-ms", "5", "--out", "x")
    assert r.returncode == 2 and "not a readable edgenas HAT checkpoint" in r.stderr


def test_a_subtransformer_trained_alone_has_the_same_shape_as_extracted(space, data):
    arch = space.sample(np.random.default_rng(5))
    alone = build_subtransformer(space, arch, data.src_vocab, data.tgt_vocab)
    extracted = build_supertransformer(space, data.src_vocab, data.tgt_vocab).extract(arch)
    shapes = {k: v.shape for k, v in alone.state_dict().items()}
    assert shapes == {k: v.shape for k, v in extracted.state_dict().items()}
    before = validation_loss(alone, arch, data.val)
    cfg = HATTrainConfig(steps=15, batch_size=16, warmup=3)
    trained = train_subtransformer(space, arch, data, cfg)
    assert validation_loss(trained, arch, data.val) < before - 0.3  # from scratch, the same initialisation
    torch.rand(7)  # another history of the global generator: the same result (dropout has its own seed)
    again = train_subtransformer(space, arch, data, cfg)
    assert validation_loss(again, arch, data.val) == validation_loss(trained, arch, data.val)
