"""Once-for-All: elastic layers, the supernet contract, width sorting, BN recalibration, training checkpoints."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.spaces import get_space
from edgenas.supernets.bn_calibration import recalibrate_bn
from edgenas.supernets.dynamic import DynamicConv2d, centre_crop
from edgenas.supernets.ofa import OFAMobileNetV3
from edgenas.supernets.shrinking import ShrinkConfig, load_supernet, parse_schedule, sample_subnet, train_supernet

torch.set_num_threads(1)


def _perturb(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics / affine parameters and kernel transforms, so equalities are meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


@pytest.fixture(scope="module")
def tiny():
    return get_space("mbv3-tiny")


# ------------------------------------------------------------------------------------ elastic kernel
def test_identity_kernel_transform_is_centre_crop():
    conv = DynamicConv2d(6, 6, (3, 5, 7), depthwise=True)
    for k in (7, 5, 3):
        assert torch.equal(conv.weight_for(6, 6, k), centre_crop(conv.weight, k))
    with torch.no_grad():
        conv.transforms["5to3"].add_(0.1)
    assert torch.equal(conv.weight_for(6, 6, 5), centre_crop(conv.weight, 5))  # 7->5 untouched
    assert not torch.allclose(conv.weight_for(6, 6, 3), centre_crop(conv.weight, 3))


def test_kernel_transform_uses_the_centre_of_the_larger_kernel():
    conv = DynamicConv2d(4, 4, (3, 5, 7), depthwise=True)
    with torch.no_grad():
        conv.transforms["7to5"].copy_(torch.randn(25, 25))
        conv.transforms["5to3"].copy_(torch.randn(9, 9))
    w3 = conv.weight_for(4, 4, 3)
    with torch.no_grad():  # the outer ring of the 7x7 kernel plays no part in the 3x3 one
        conv.weight[:, :, 0, :] += 1.0
    assert torch.equal(w3, conv.weight_for(4, 4, 3))


# ----------------------------------------------------------------------------- supernet contract
@pytest.mark.parametrize("space_name", ["mbv3-tiny", "tests.micro_space:micro_space"])
def test_supernet_output_equals_extracted_module(space_name):
    space = get_space(space_name)
    net = _perturb(OFAMobileNetV3(space, 10, 3, seed=1)).eval()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(4)] + [net.largest()]
    if len(space["width"].choices) > 1:
        archs.append({**archs[0], "width": min(space["width"].choices)})
    for arch in archs:
        r = min(space.resolution(arch), 20)
        arch = {**arch, "resolution": r} if r in space["resolution"].choices else arch
        res = space.resolution(arch)
        x = torch.randn(2, 3, res, res)
        net.set_active(arch)
        y_super = net(x)
        model = net.extract(arch).eval()
        assert type(model).__name__ == "MBV3Net"
        built = space.build(arch, 10, 3)
        assert [p.shape for p in model.parameters()] == [p.shape for p in built.parameters()]
        assert torch.allclose(y_super, model(x), atol=1e-5), arch


def test_width_sorting_preserves_the_full_network(tiny):
    net = _perturb(OFAMobileNetV3(tiny, 10, seed=2)).eval()
    x = torch.randn(2, 3, 16, 16)
    arch = {**net.largest(), "resolution": 16}
    net.set_active(arch)
    before = net(x)
    net.sort_channels()
    net.set_active(arch)
    assert torch.allclose(before, net(x), atol=1e-5)
    block = net.stages[0][0]
    imp = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp[:-1] >= imp[1:])  # most important hidden channels first
    # and a narrower subnet now uses the most important channels
    small = {**arch, "s1.b1.expand": 3}
    net.set_active(small)
    assert net(x).shape == (2, 10)


def test_choices_touch_exactly_the_intended_layers(tiny):
    net = OFAMobileNetV3(tiny, 10, seed=3).train()
    net.dropout.p = 0.0
    arch = {**net.largest(), "resolution": 16, "s2.depth": 2, "s1.b1.kernel": 3, "s1.b2.kernel": 7,
            "s1.b1.expand": 3}
    net.set_active(arch)
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    # depth: blocks 3 and 4 of stage 2 are skipped
    assert all(grads[n] is None for n in grads if n.startswith(("stages.1.2.", "stages.1.3.")))
    assert grads["stages.1.1.depthwise.conv.weight"] is not None
    # kernel 3 trains both transformation matrices of that block; kernel 7 none of its own
    assert grads["stages.0.0.depthwise.conv.transforms.7to5"] is not None
    assert grads["stages.0.0.depthwise.conv.transforms.5to3"] is not None
    assert grads["stages.0.1.depthwise.conv.transforms.7to5"] is None
    # kernel 3: the outer rings of the 7x7 weight get no gradient
    w = grads["stages.0.0.depthwise.conv.weight"]
    assert float(w[:, :, 0, :].abs().sum()) == 0.0 and float(w[:, :, 3, 3].abs().sum()) > 0
    # expand 3: only the first hidden channels of the expand conv are used
    block = net.stages[0][0]
    hidden = block.hidden(8)  # input channels of stage 1 at width 1.0 (first block: 8)
    g = grads["stages.0.0.expand.conv.weight"]
    assert float(g[hidden:].abs().sum()) == 0.0 and float(g[:hidden].abs().sum()) > 0


# ------------------------------------------------------------------------------- BN recalibration
def test_bn_recalibration_equals_direct_statistics(tiny):
    net = OFAMobileNetV3(tiny, 10, seed=4)
    arch = {**tiny.sample(np.random.default_rng(1)), "resolution": 16}
    model = net.extract(arch)
    images = torch.randn(24, 3, 16, 16)
    # direct: every BN's input in one train-mode pass over all images
    seen: dict[nn.Module, torch.Tensor] = {}
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    ref = copy.deepcopy(model)
    ref_bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(lambda m, i: seen.__setitem__(m, i[0].detach().double()))
             for bn in ref_bns]
    with torch.no_grad():
        ref.eval()
        for bn in ref_bns:
            bn.train()
        ref(images)
    for h in hooks:
        h.remove()
    recalibrate_bn(model, images, batch_size=len(images))
    for bn, rbn in zip(bns, ref_bns, strict=True):
        x = seen[rbn]
        assert torch.allclose(bn.running_mean.double(), x.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(bn.running_var.double(), x.transpose(0, 1).flatten(1).var(1), atol=1e-4)
    # in small batches the first BN (whose input does not depend on other BNs) is still exact
    recalibrate_bn(model, images, batch_size=5)
    x0 = seen[ref_bns[0]]
    assert torch.allclose(bns[0].running_mean.double(), x0.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bns[0].running_var.double(), x0.transpose(0, 1).flatten(1).var(1), atol=1e-4)
    assert not model.training


# ------------------------------------------------------------------------------ training, checkpoints
def _data():
    from edgenas.data import load_synthetic_dataset

    return load_synthetic_dataset(n=96, classes=4, size=12).subset(64, 32)


def test_schedule_parsing():
    phases = parse_schedule("full:2,kernel:1,depth:1,expand:3")
    assert [p.name for p in phases] == ["full", "kernel", "depth", "expand"]
    assert phases[3].elastic == {"kernel", "depth", "expand", "width"} and phases[0].elastic == set()
    with pytest.raises(EdgenasError, match="unknown phase 'widht'"):
        parse_schedule("full:1,widht:1")


def test_sampling_respects_the_phase(micro):
    rng = np.random.default_rng(0)
    archs = [sample_subnet(micro, {"kernel"}, rng) for _ in range(20)]
    assert all(a["s1.depth"] == 2 and a["s1.b1.expand"] == 3 for a in archs)
    assert {a["s1.b1.kernel"] for a in archs} == {3, 5}


def test_resume_after_interruption_loses_nothing(micro, tmp_path):
    data = _data()
    cfg = ShrinkConfig(schedule="full:1,kernel:2,expand:1", batch_size=16, eval_images=16)
    full = train_supernet(micro, data, tmp_path / "a", cfg)

    class Stop(Exception):
        pass

    def stop_after_kernel(msg: str) -> None:
        if "kernel epoch 1/2" in msg:  # in the middle of a phase: the optimiser state must carry over
            raise Stop

    with pytest.raises(Stop):
        train_supernet(micro, data, tmp_path / "b", cfg, progress=stop_after_kernel)
    assert (tmp_path / "b" / "phase1_full.pt").exists() and not (tmp_path / "b" / "phase2_kernel.pt").exists()
    with pytest.raises(EdgenasError, match="--resume"):
        train_supernet(micro, data, tmp_path / "b", cfg)
    with pytest.raises(EdgenasError, match="other settings"):
        train_supernet(micro, data, tmp_path / "b", ShrinkConfig(schedule="full:2", batch_size=16), resume=True)
    resumed = train_supernet(micro, data, tmp_path / "b", cfg, resume=True)
    assert resumed.resumed_from is not None
    a, b = full.supernet.state_dict(), resumed.supernet.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert [h["phase"] for h in resumed.history] == ["full", "kernel", "kernel", "expand"]


def test_checkpoint_from_another_space_is_refused(micro, tiny, tmp_path):
    train_supernet(micro, _data(), tmp_path / "m", ShrinkConfig(schedule="full:1", batch_size=16, eval_images=8))
    net, blob = load_supernet(tmp_path / "m")  # its own space, found from the checkpoint
    assert net.space.name == "micro" and json.loads(blob["built_for"])["num_classes"] == 4
    with pytest.raises(EdgenasError, match="was built for space 'micro'.*not for space 'mbv3-tiny'"):
        load_supernet(tmp_path / "m", tiny)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgenasError, match="not a readable edgenas OFA checkpoint"):
        load_supernet(tmp_path / "junk.pt")


def test_a_run_from_before_a_setting_existed_resumes_with_its_default(micro, tmp_path):
    data = _data()
    cfg = ShrinkConfig(schedule="full:2", batch_size=16, eval_images=8)

    class Stop(Exception):
        pass

    def stop_after_first(msg: str) -> None:
        if "epoch 1/2" in msg:
            raise Stop

    with pytest.raises(Stop):
        train_supernet(micro, data, tmp_path / "run", cfg, progress=stop_after_first)
    last = tmp_path / "run" / "last.pt"
    blob = torch.load(last, weights_only=True)
    old = json.loads(blob["config"])
    del old["augment"]  # as written before the setting existed
    blob["config"] = json.dumps(old, sort_keys=True)
    torch.save(blob, last)
    with pytest.raises(EdgenasError, match=r"other settings \(augment\)"):
        train_supernet(micro, data, tmp_path / "run", ShrinkConfig(schedule="full:2", batch_size=16,
                                                                   eval_images=8, augment=True), resume=True)
    assert train_supernet(micro, data, tmp_path / "run", cfg, resume=True).resumed_from is not None


def test_augmented_supernet_training_is_seeded_and_changes_the_weights(micro, tmp_path):
    data = _data()

    def weights(name: str, augment: bool) -> torch.Tensor:
        cfg = ShrinkConfig(schedule="full:1,expand:1", batch_size=16, eval_images=8, augment=augment)
        net = train_supernet(micro, data, tmp_path / name, cfg).supernet
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    aug = weights("a", True)
    assert torch.equal(aug, weights("b", True))
    assert not torch.allclose(aug, weights("c", False))
