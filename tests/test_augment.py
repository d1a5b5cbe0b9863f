"""Batch augmentation (random crop of a padded image + horizontal flip) and device plumbing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgenas.augment import random_crop_flip
from edgenas.errors import EdgenasError
from edgenas.estimators.train import TrainRecipe, evaluate_accuracy, torch_device, train_model


def _images(n: int = 6, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(1))


def test_no_padding_and_no_flip_is_the_identity():
    x = _images()
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(out, x)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_every_image_is_a_crop_of_its_padded_self_possibly_mirrored():
    x, pad = _images(n=16), 2
    out = random_crop_flip(x, torch.Generator().manual_seed(3), pad=pad)
    padded = F.pad(x, (pad,) * 4)
    shifts, mirrors = set(), 0
    for i in range(len(x)):
        found = [(dy, dx, m) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for m in (False, True)
                 if torch.equal(out[i], (lambda c: c.flip(2) if m else c)(padded[i, :, dy : dy + 8, dx : dx + 8]))]
        assert found, f"image {i} is not a crop of its padded copy"
        shifts.add(found[0][:2])
        mirrors += found[0][2]
    assert len(shifts) > 3 and 0 < mirrors < len(x)  # the offsets and flips really vary


def test_seeded_and_different_for_another_seed():
    x = _images()
    a = random_crop_flip(x, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, torch.Generator().manual_seed(5))
    c = random_crop_flip(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_training_with_augmentation_is_deterministic_and_differs_from_without():
    x, y = _images(n=32), torch.arange(32) % 3

    def trained(augment: bool) -> torch.Tensor:
        net = train_model(_net(), x, y, TrainRecipe(epochs=2, batch_size=8, augment=augment), seed=0)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    with_aug = trained(True)
    assert torch.equal(with_aug, trained(True))
    assert not torch.allclose(with_aug, trained(False))


def test_evaluate_accuracy_is_the_share_of_argmax_hits():
    x, y = _images(n=32), torch.arange(32) % 3
    net = _net().eval()
    with torch.no_grad():
        hits = (net(x).argmax(1) == y).float().mean().item() * 100
    assert evaluate_accuracy(net, x, y) == pytest.approx(hits)
    assert evaluate_accuracy(net, x, (y + 1) % 3) != pytest.approx(hits)  # labels matter


def test_device_names_are_checked():
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EdgenasError, match="unknown device 'gpu0'"):
        torch_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(EdgenasError, match="sees no CUDA GPU; use --device cpu"):
            torch_device("cuda")


def test_dataset_moves_to_a_device():
    from edgenas.data import load_synthetic_dataset

    data = load_synthetic_dataset(n=40, classes=4, size=8).subset(24, 16)
    assert data.to("cpu") is data
    meta = data.to("meta")  # a device without storage: every tensor moves, shapes stay
    assert meta.x_train.device.type == "meta" and meta.y_val.shape == data.y_val.shape
    assert meta.num_classes == data.num_classes
