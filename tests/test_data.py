from __future__ import annotations

import numpy as np
import pytest

from edgenas.data import load_dataset
from edgenas.errors import EdgenasError


def test_digits_split_is_deterministic_and_stratified():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape[1:] == (1, 8, 8) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) == 1797
    assert (a.y_val == b.y_val).all()
    counts = np.bincount(a.y_val.numpy(), minlength=10)
    assert counts.min() >= 30  # every class in validation
    x16, _ = a.at_resolution(16)
    assert x16.shape[-2:] == (16, 16)


def test_npz_file_and_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        np.savez(tmp_path / f"part{i}.npz", x=rng.integers(0, 255, (50, 12, 12, 3), dtype=np.uint8),
                 y=np.arange(50) % 5)
    d = load_dataset(f"npz:{tmp_path}")
    assert d.num_classes == 5 and d.in_channels == 3 and len(d.x_train) + len(d.x_val) == 100
    one = load_dataset(f"npz:{tmp_path / 'part0.npz'}")
    assert len(one.x_train) + len(one.x_val) == 50


def test_npz_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EdgenasError, match="not a valid .npz"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(EdgenasError, match="lacks array 'x'"):
        load_dataset(f"npz:{tmp_path / 'nox.npz'}")
    with pytest.raises(EdgenasError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing'}")


def test_cifar10_binary_distribution(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    for name in ["data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"]:
        labels = rng.integers(0, 10, (20, 1), dtype=np.uint8)
        pixels = rng.integers(0, 255, (20, 3072), dtype=np.uint8)
        np.concatenate([labels, pixels], axis=1).tofile(root / name)
    d = load_dataset(f"cifar10:{tmp_path}")
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_val.shape == (20, 3, 32, 32)
    (root / "test_batch.bin").write_bytes(b"123")
    with pytest.raises(EdgenasError, match="not a CIFAR-10 binary batch"):
        load_dataset(f"cifar10:{tmp_path}")


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ["cat", "dog"]:
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert d.num_classes == 2 and d.x_train.shape[1:] == (3, 16, 16)
    assert len(d.x_train) + len(d.x_val) == 10


def test_unknown_data_spec():
    with pytest.raises(EdgenasError, match="did you mean 'digits'"):
        load_dataset("digit")
