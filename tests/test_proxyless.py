"""ProxylessNAS: binarized paths, the two-path estimator, expected latency, derivation, CLI and bad input."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.spaces import get_space
from edgenas.supernets.gradient_search import GradientSearch, GradientSearchConfig
from edgenas.supernets.latency_loss import BlockLatency, latency_loss, most_probable_under
from edgenas.supernets.mixed import MixedOp
from edgenas.supernets.proxyless import ProxylessSupernet

ROOT = Path(__file__).resolve().parents[1]
LUT = ROOT / "bench/results/lut_mbv3_tiny_onnxruntime_1t.json"
needs_lut = pytest.mark.skipif(not LUT.exists(), reason="the mbv3-tiny layer table is not in bench/results")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3-tiny")


@pytest.fixture(scope="module")
def net(space):
    return ProxylessSupernet(space, 10, 3, resolution=16, width=0.75, seed=0)


@contextlib.contextmanager
def counting_calls(net: ProxylessSupernet) -> Iterator[list[list[int]]]:
    """Calls of every candidate of every block while the block is open (hooks removed afterwards)."""
    counts = [[0] * len(m) for m in net.mixed]
    handles = []
    for b, m in enumerate(net.mixed):
        for j, op in enumerate(m.candidates):
            def hook(*_args, b=b, j=j):
                counts[b][j] += 1
            handles.append(op.register_forward_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()
        net.zero_grad(set_to_none=True)


def test_binarized_forward_computes_exactly_one_path_per_block(net):
    gen = torch.Generator().manual_seed(0)
    with counting_calls(net) as counts:
        net.prepare("weight", gen)
        net(torch.randn(2, 3, 16, 16))
        assert all(sum(c) == 1 for c in counts), counts
    with counting_calls(net) as counts:
        net.prepare("arch", gen)  # the two-path estimator: exactly two paths per block
        net(torch.randn(2, 3, 16, 16)).sum().backward()
        assert all(sum(c) == 2 and max(c) == 1 for c in counts), counts


def test_weight_step_gives_alpha_no_gradient(net):
    net.prepare("weight", torch.Generator().manual_seed(1))
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(a.grad is None for a in net.arch_parameters())
    net.zero_grad(set_to_none=True)


class _Scale(nn.Module):
    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.w**2


def test_two_path_estimator_matches_finite_differences():
    """With a loss linear in the block's output, dL/dg_k is the loss of path k, and the estimator is the
    exact gradient of the pair's expected loss sum_k q_k(alpha) L_k (q: softmax over the pair)."""
    torch.manual_seed(0)
    op = MixedOp([_Scale(w) for w in (0.5, -1.0, 2.0, 0.3)], ["a", "b", "c", "d"])
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.2, -0.4, 0.7, 0.1]))
    x, v = torch.randn(5), torch.randn(5)
    for pair, active in (((0, 2), 0), ((3, 1), 1), ((2, 1), 0)):
        op.active, op.pair, op.pair_active = None, pair, active
        op.alpha.grad = None
        (v * op(x)).sum().backward()
        grad = op.alpha.grad.clone()
        losses = {k: float((v * op.candidates[k](x)).sum()) for k in pair}

        def expected(alpha: torch.Tensor, pair=pair, losses=losses) -> float:
            q = torch.softmax(alpha[list(pair)].double(), 0)
            return float(sum(q[i] * losses[k] for i, k in enumerate(pair)))

        eps = 1e-5
        for i in range(4):
            up, down = op.alpha.detach().clone().double(), op.alpha.detach().clone().double()
            up[i] += eps
            down[i] -= eps
            fd = (expected(up) - expected(down)) / (2 * eps)
            assert grad[i].item() == pytest.approx(fd, abs=1e-4), (pair, i)
        assert all(grad[i] == 0 for i in range(4) if i not in pair)


def test_rescale_keeps_the_unsampled_probabilities():
    op = MixedOp([_Scale(w) for w in (0.5, -1.0, 2.0, 0.3, 1.5)], list("abcde"))
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.3, -0.2, 0.5, 0.0, 0.1]))
    before = op.probs().detach().clone()
    opt = torch.optim.Adam([op.alpha], lr=0.3, betas=(0.0, 0.999))
    op.sample_pair(torch.Generator().manual_seed(3))
    (op(torch.randn(4)) ** 2).sum().backward()
    op.remember_pair_alpha()
    opt.step()
    op.rescale()
    after = op.probs().detach()
    others = [i for i in range(5) if i not in op.pair]
    assert torch.allclose(after[others], before[others], atol=1e-6)
    assert not torch.allclose(after[list(op.pair)], before[list(op.pair)])
    assert after[list(op.pair)].sum().item() == pytest.approx(before[list(op.pair)].sum().item(), abs=1e-6)


def test_expected_latency_equals_the_hand_sum():
    lat = BlockLatency(0.5, [[1.0, 2.0, 0.0], [0.25, 4.0]], ["b1", "b2"], [["x", "y", "zero"], ["x", "y"]])
    p = [torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.4])]
    hand = 0.5 + (0.2 * 1.0 + 0.3 * 2.0 + 0.5 * 0.0) + (0.6 * 0.25 + 0.4 * 4.0)
    assert lat.expected(p).item() == pytest.approx(hand, rel=1e-6)
    assert lat.of_choice([1, 0]) == pytest.approx(0.5 + 2.0 + 0.25)
    assert lat.min_ms() == pytest.approx(0.75) and lat.max_ms() == pytest.approx(6.5)


@needs_lut
def test_block_latency_from_the_table_equals_the_table_prediction(space, net):
    """The per-block split of the calibrated layer table sums to the table's own prediction of the
    derived network (zero ops compacted), for random choices."""
    from edgenas.hardware.lut import LatencyTable

    model = LatencyTable.load(LUT).bind(space, 10, 3)
    lat = BlockLatency.from_lut(model, 16, 0.75, net.candidates, net.zero_slots)
    rng = np.random.default_rng(0)
    for _ in range(5):
        choice = [int(rng.integers(len(m))) for m in net.mixed]
        arch = net.arch_of(choice)
        assert lat.of_choice(choice) == pytest.approx(float(model.predict([arch])[0]), rel=1e-9)


@pytest.mark.parametrize("form", ["additive", "multiplicative"])
def test_alpha_moves_towards_the_cheaper_op_under_the_latency_loss_alone(form):
    op = MixedOp([nn.Identity(), nn.Identity(), nn.Identity()], ["slow", "mid", "fast"])
    lat = BlockLatency(0.1, [[0.9, 0.5, 0.2]], ["b"], [["slow", "mid", "fast"]])
    opt = torch.optim.Adam([op.alpha], lr=0.05)
    ce = torch.tensor(1.0)
    start = op.probs().detach().clone()
    for _ in range(20):
        loss = latency_loss(ce, lat.expected([op.probs()]), 0.5, form, lam=1.0, beta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = op.probs().detach()
    assert end[2] > start[2] + 0.1 and end[0] < start[0] - 0.1


def test_latency_loss_forms_are_the_published_formulas():
    ce, e = torch.tensor(2.0), torch.tensor(0.4)
    assert latency_loss(ce, e, 0.5, "additive", lam=0.3).item() == pytest.approx(2.0 + 0.3 * 0.4 / 0.5)
    want = 2.0 * (math.log(400.0) / math.log(500.0)) ** 0.6
    assert latency_loss(ce, e, 0.5, "multiplicative", beta=0.6).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(EdgenasError, match="latency loss form"):
        latency_loss(ce, e, 0.5, "exponential")


def test_most_probable_under_a_budget_is_the_brute_force_optimum():
    rng = np.random.default_rng(1)
    slots = [list(rng.uniform(0.01, 0.1, 3)) for _ in range(4)]
    lat = BlockLatency(0.05, slots, list("abcd"), [["x", "y", "z"]] * 4)
    logp = [np.log(rng.dirichlet(np.ones(3))) for _ in range(4)]
    for budget, floor in ((0.25, None), (0.3, 0.27), (0.2, None)):
        best, arg = -np.inf, None
        for c in itertools.product(range(3), repeat=4):
            t = lat.of_choice(c)
            if t <= budget and (floor is None or t >= floor):
                s = sum(lp[j] for lp, j in zip(logp, c, strict=True))
                if s > best:
                    best, arg = s, list(c)
        got = most_probable_under(logp, lat, budget, resolution_ms=1e-5, floor_ms=floor)
        if arg is None:
            assert got is None
        else:
            assert got is not None and lat.of_choice(got) <= budget
            assert sum(lp[j] for lp, j in zip(logp, got, strict=True)) == pytest.approx(best, abs=1e-2)


def test_derived_arch_is_valid_and_its_network_equals_the_supernet_path(space, net):
    choice = [0] * len(net.mixed)
    zero = len(net.candidates)
    choice[2], choice[3], choice[6], choice[7] = zero, 4, 8, zero  # a zero op between two blocks
    arch = net.arch_of(choice)
    assert space.validate(arch) == arch
    assert arch["s1.depth"] == 3 and arch["s2.depth"] == 3
    net.fix(choice)
    net.eval()
    x = torch.randn(3, 3, 16, 16)
    standalone = net.extract(arch)
    assert type(standalone) is type(space.build(arch, 10, 3))
    with torch.no_grad():
        assert torch.allclose(net(x), standalone(x), atol=1e-5)
    net.set_active(arch)  # the compacted choice computes the same function
    with torch.no_grad():
        assert torch.allclose(net(x), standalone(x), atol=1e-5)
    net.train()
    with pytest.raises(EdgenasError, match="resolution"):
        net.choice_of({**arch, "resolution": 32})


@pytest.fixture(scope="module")
def nested(space):
    return ProxylessSupernet(space, 10, 3, resolution=16, width=0.75, seed=0, sharing="nested")


def test_nested_candidates_share_one_block_and_extract_exactly(space, nested):
    """With nested sharing a slot's candidates are views of one elastic block: the supernet holds one
    block's weights per slot, one path is still computed per block, a step on one candidate moves the
    others, and the extracted standalone network computes the supernet path exactly."""
    separate = ProxylessSupernet(space, 10, 3, resolution=16, width=0.75, seed=0)
    assert len(nested.shared_blocks) == len(nested.mixed)
    assert sum(p.numel() for p in nested.parameters()) < sum(p.numel() for p in separate.parameters()) / 3
    assert all(not list(c.parameters()) for m in nested.mixed for c in m.candidates)
    with counting_calls(nested) as counts:
        nested.prepare("weight", torch.Generator().manual_seed(0))
        nested(torch.randn(2, 3, 16, 16))
        assert all(sum(c) == 1 for c in counts), counts
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in nested.classifier.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.normal_()  # logits of a readable size
    x = torch.randn(4, 3, 16, 16)
    rng = np.random.default_rng(1)
    nested.eval()
    for _ in range(3):
        arch = space.validate({**space.sample(rng), "resolution": 16, "width": 0.75})
        nested.set_active(arch)
        with torch.no_grad():
            assert torch.allclose(nested(x), nested.extract(arch)(x), atol=1e-5)
    nested.train()
    block = nested.mixed[1]
    k3e3, k7e6 = nested.candidates.index((3, 3)), nested.candidates.index((7, 6))
    h = torch.randn(4, block.candidates[0].block.max_in, 8, 8)
    before = block.candidates[k7e6](h).detach()
    opt = torch.optim.SGD(nested.shared_blocks[1].parameters(), lr=0.5)
    block.candidates[k3e3](h).pow(2).mean().backward()
    opt.step()
    nested.zero_grad(set_to_none=True)
    assert not torch.allclose(block.candidates[k7e6](h), before)  # the larger kernel holds the smaller one


def _config(tmp_path: Path, **kw) -> GradientSearchConfig:
    base = dict(out=str(tmp_path / "run"), method="proxyless", space="mbv3-tiny", data="synthetic",
                target=f"lut:{LUT}", latency_ms=0.25, resolution=16, width=0.75, epochs=2, warmup_epochs=1,
                batch_size=16, arch_every=1, max_train=100, max_eval=32, seed=0, plots=False)
    base.update(kw)
    return GradientSearchConfig(**base)


@needs_lut
def test_interrupted_search_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path):
    full = GradientSearch(_config(tmp_path / "a"))
    full.start()
    ref = full.run()

    cut = GradientSearch(_config(tmp_path / "b"))
    cut.start()
    save = cut._save_checkpoint

    def save_then_die() -> None:
        save()
        raise KeyboardInterrupt

    cut._save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    with pytest.raises(EdgenasError, match="--resume"):
        GradientSearch(_config(tmp_path / "b")).start(resume=False)
    again = GradientSearch(_config(tmp_path / "b"))
    again.start(resume=True)
    assert again.epoch == 1
    res = again.run()
    assert res.arch == ref.arch
    for a, b in zip(full.net.arch_parameters(), again.net.arch_parameters(), strict=True):
        assert torch.allclose(a, b)
    blob = json.loads((tmp_path / "b/run/arch.json").read_text())
    assert blob["arch"] == ref.arch and abs(blob["metrics"]["latency"] / 0.25 - 1) <= 0.05 + 1e-9


@needs_lut
def test_a_weight_only_run_starts_other_searches_with_its_weights(tmp_path):
    """One warm-up shared by several targets: --warmup-epochs = --epochs trains the weights alone, and
    --init-weights starts a search from them (weights only: alpha, optimisers and schedule start afresh)."""
    warm = GradientSearch(_config(tmp_path / "warm", epochs=1, warmup_epochs=1, plots=True))
    warm.start()
    warm.run()
    assert warm.history["alpha"] == [] and (tmp_path / "warm/run/arch.json").exists()
    fresh = GradientSearch(_config(tmp_path / "fresh"))
    assert all(torch.equal(a, b) for a, b in zip(warm.net.arch_parameters(), fresh.net.arch_parameters(),
                                                   strict=True))  # no architecture step was taken

    started = GradientSearch(_config(tmp_path / "s", init_weights=str(tmp_path / "warm/run")))
    started.start()
    arch_ids = {id(p) for p in started.net.arch_parameters()}
    trained = dict(warm.net.named_parameters())
    weights = [(n, p) for n, p in started.net.named_parameters() if id(p) not in arch_ids]
    assert weights and all(torch.equal(p, trained[n]) for n, p in weights)
    differs = [n for n, p in weights if not torch.equal(p, dict(fresh.net.named_parameters())[n])]
    assert differs  # the warm-up changed them, and the search starts from the change
    started.run()
    assert json.loads((tmp_path / "s/run/search.json").read_text())["init_weights"] == str(tmp_path / "warm/run")

    with pytest.raises(EdgenasError, match="holds no checkpoint.pt"):
        GradientSearch(_config(tmp_path / "x", init_weights=str(tmp_path / "nowhere"))).start()
    with pytest.raises(EdgenasError, match="was searched with candidates"):
        GradientSearch(_config(tmp_path / "y", init_weights=str(tmp_path / "warm/run"),
                               candidates=[[3, 3], [5, 3]])).start()


@needs_lut
def test_at_most_constraint_never_rewards_latency(tmp_path):
    """Below a slack target the equality multiplier turns negative (slower paths rewarded); the at-most
    one is projected to zero, so only the cross-entropy moves alpha."""
    coefs = {}
    for constraint in ("equal", "at-most"):
        search = GradientSearch(_config(tmp_path / constraint, latency_ms=2.0, constraint=constraint, lam=0.0))
        search.start()
        search.run()
        coefs[constraint] = [row["coef"] for row in search.history["alpha"]]
    assert min(coefs["equal"]) < 0
    assert coefs["at-most"] and all(c == 0.0 for c in coefs["at-most"])
    with pytest.raises(EdgenasError, match="unknown --constraint 'le'"):
        GradientSearch(_config(tmp_path / "bad", constraint="le"))


@needs_lut
def test_select_derivation_keeps_the_candidate_best_on_the_arch_split(tmp_path, space):
    """--derive select: the window's arch and others drawn in the window, each scored with the supernet's
    weights on the architecture split; the derived one is the best scored, and it is what the store holds."""
    search = GradientSearch(_config(tmp_path, derive="select", select_from=5, sharing="nested"))
    search.start()
    scored_on = []
    evaluate = search.evaluate

    def spy(choice, images=None, labels=None):
        scored_on.append(images)
        return evaluate(choice, images, labels)

    search.evaluate = spy
    res = search.run()
    blob = json.loads((tmp_path / "run/arch.json").read_text())
    picks = blob["selection"]
    assert blob["derived_by"] == "select" and 2 <= len(picks) <= 5
    assert len({json.dumps(p["arch"], sort_keys=True) for p in picks}) == len(picks)  # distinct
    assert picks[0]["arch"] == search.net.arch_of(search.derive_choice("window"))
    assert all(abs(p["latency_ms"] / 0.25 - 1) <= 0.05 + 1e-9 for p in picks)
    best = max(picks, key=lambda p: p["arch_split_accuracy"])
    assert res.arch == blob["arch"] == best["arch"] and space.validate(res.arch) == res.arch
    assert sum(x is search.xa for x in scored_on) == len(picks)  # scored on the architecture split only
    assert not any(x is search.xv for x in scored_on)
    from edgenas.store import TrialStore

    assert [r.arch for r in TrialStore.open(tmp_path / "run").records()] == [res.arch]


@needs_lut
def test_a_finished_search_derived_again_keeps_the_earlier_arch(tmp_path):
    """--resume with another --derive re-derives from the checkpoint without training; settings that change
    the training still refuse to resume."""
    first = GradientSearch(_config(tmp_path, derive="argmax"))
    first.start()
    earlier = first.run()
    again = GradientSearch(_config(tmp_path, derive="window"))
    again.start(resume=True)
    res = again.run()
    assert again.epoch == 2 and res.seconds == earlier.seconds  # nothing trained
    assert res.arch == again.net.arch_of(again.derive_choice("window"))
    assert res.arch != earlier.arch  # the argmax lands far below the target, the window does not
    assert json.loads((tmp_path / "run/arch.argmax.json").read_text())["arch"] == earlier.arch
    from edgenas.store import TrialStore

    assert [r.arch for r in TrialStore.open(tmp_path / "run").records()] == [res.arch]
    with pytest.raises(EdgenasError, match="different lr"):
        GradientSearch(_config(tmp_path, lr=0.5)).start(resume=True)
    with pytest.raises(EdgenasError, match="--select-from must be at least 1"):
        GradientSearch(_config(tmp_path, derive="select", select_from=0))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgenas", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


@needs_lut
def test_cli_search_writes_the_arch_and_feeds_export(tmp_path, space):
    out = tmp_path / "px"
    common = ["--data", "synthetic", "--target", f"lut:{LUT}", "--resolution", "16", "--width", "0.75",
              "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "16", "--max-train", "96",
              "--arch-every", "2", "--retrain-epochs", "1", "--quiet", "--weight-sharing", "nested"]
    p = _cli("proxyless", "search", "--out", str(out), "--latency-ms", "0.3", *common, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    blob = json.loads((out / "arch.json").read_text())
    assert space.validate(blob["arch"]) == blob["arch"]
    for f in ("alpha.png", "curves.png", "history.json", "checkpoint.pt", "trials.csv", "pareto.json"):
        assert (out / f).exists(), f
    from edgenas.export import load_arch_json

    assert load_arch_json(out / "arch.json") == blob["arch"]
    p = _cli("export", str(out), "--out", str(tmp_path / "m.onnx"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "m.json").read_text())["arch"] == blob["arch"]

    # the finished search derived again by selection, from its checkpoint
    p = _cli("proxyless", "search", "--out", str(out), "--resume", "--derive", "select", "--select-from", "3",
             *common, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    again = json.loads((out / "arch.json").read_text())
    assert again["derived_by"] == "select" and 1 <= len(again["selection"]) <= 3

    # bad input: one line, exit 2
    p = _cli("proxyless", "search", "--out", str(tmp_path / "x"), "--latency-ms", "0.01", *common, cwd=tmp_path)
    assert p.returncode == 2 and "below the smallest reachable network" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@needs_lut
def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(EdgenasError, match="unknown gradient-search target 'gpu'"):
        GradientSearch(_config(tmp_path, target="gpu"))
    with pytest.raises(EdgenasError, match="needs a latency target"):
        GradientSearch(_config(tmp_path, latency_ms=None))
    table = json.loads(LUT.read_text())
    key = next(k for k in table["entries"] if k.startswith("mbconv-in:12x4x4-out:12-k:7") and "-e:6-" in k)
    del table["entries"][key]
    (tmp_path / "holey.json").write_text(json.dumps(table))
    with pytest.raises(EdgenasError, match=f"has no entry '{key}'"):
        GradientSearch(_config(tmp_path, target=f"lut:{tmp_path / 'holey.json'}"))
    with pytest.raises(EdgenasError, match="candidate kernel 9"):
        GradientSearch(_config(tmp_path, candidates=[[9, 3]]))
    with pytest.raises(EdgenasError, match="unknown --weight-sharing 'shared'; valid: nested, none"):
        GradientSearch(_config(tmp_path, sharing="shared"))


@needs_lut
def test_target_cpu_reuses_the_cached_table_of_this_machine(tmp_path):
    import shutil

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(LUT, cache / "lut_mbv3-tiny_onnxruntime_1t_10c.json")
    search = GradientSearch(_config(tmp_path, target="cpu", cache_dir=str(cache)))
    assert search.latency is not None and search.latency.source.endswith("lut_mbv3-tiny_onnxruntime_1t_10c.json")


def test_method_defaults_nested_weights_for_proxyless_separate_for_darts(tmp_path: Path) -> None:
    proxyless = GradientSearchConfig(out=str(tmp_path), method="proxyless")
    darts = GradientSearchConfig(out=str(tmp_path), method="darts")
    assert (proxyless.sharing, proxyless.lr) == ("nested", 0.03)
    assert (darts.sharing, darts.lr) == ("none", 0.1)
    assert (proxyless.zero_gamma, darts.zero_gamma) == (True, False)
    explicit = GradientSearchConfig(out=str(tmp_path), method="proxyless", sharing="none", lr=0.1)
    assert (explicit.sharing, explicit.lr) == ("none", 0.1)
    # a stored config (resumed search) keeps the values it was run with
    assert GradientSearchConfig.from_json(explicit.to_json()).sharing == "none"


@pytest.mark.parametrize("sharing", ["none", "nested"])
def test_zero_gamma_supernet_starts_every_residual_candidate_as_the_skip(space, sharing):
    def outputs(zero_gamma: bool) -> tuple[torch.Tensor, torch.Tensor]:
        net = ProxylessSupernet(space, 10, 3, resolution=16, width=0.75, seed=0, sharing=sharing,
                                zero_gamma=zero_gamma).eval()
        rng = np.random.default_rng(0)
        some = [int(rng.integers(len(net.candidates))) for _ in net.zero_slots]  # a candidate MBConv per slot
        skip = [len(net.candidates) if droppable else c for c, droppable in zip(some, net.zero_slots, strict=True)]
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            net.fix(some)
            a = net(x)
            net.fix(skip)
            return a, net(x)

    with_candidates, skipped = outputs(True)  # logits are tiny at init: compare relative to their size
    torch.testing.assert_close(with_candidates, skipped, rtol=1e-4, atol=1e-4 * float(skipped.abs().max()))
    with_candidates, skipped = outputs(False)
    assert float((with_candidates - skipped).abs().max()) > 1e-2 * float(skipped.abs().max())


@needs_lut
def test_a_search_from_before_zero_gamma_resumes_and_keeps_its_initialisation_recorded(tmp_path):
    old = GradientSearch(_config(tmp_path, epochs=1, warmup_epochs=1))
    old.start()
    old.run()
    stored = json.loads((tmp_path / "run/search.json").read_text())
    del stored["zero_gamma"]  # written before the setting existed: its supernet started without it
    (tmp_path / "run/search.json").write_text(json.dumps(stored))
    again = GradientSearch(_config(tmp_path, epochs=2, warmup_epochs=1))  # today's default: zero_gamma on
    again.start(resume=True)
    assert again.epoch == 1
    assert json.loads((tmp_path / "run/search.json").read_text())["zero_gamma"] is False
