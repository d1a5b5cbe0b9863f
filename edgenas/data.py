"""Data sets for search and training, held in memory as normalised float tensors.

Specs (``--data``):

- ``digits`` — scikit-learn's 8x8 handwritten digits (bundled with scikit-learn; the built-in default).
- ``npz:PATH`` — one ``.npz`` file or a folder of them, each with ``x`` (uint8, N x H x W x C) and ``y``
  (integer labels); e.g. ``../shared/data/cifar10``.
- ``cifar10:PATH`` — CIFAR-10's binary distribution (``data_batch_1.bin`` .. ``_5.bin`` and
  ``test_batch.bin``, in PATH or ``PATH/cifar-10-batches-bin``); the test batch is the validation split.
- ``folder:PATH`` — an image folder: one sub-folder per class, or ``train/`` and ``val/`` holding those.
- ``synthetic`` — random class-dependent patterns (for smoke tests).

Splits are deterministic: a stratified split with a fixed seed (``val_fraction``) where the source has
no validation split of its own. Images are resized to an architecture's resolution on demand (bilinear,
antialiased), and the resized copies are cached.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.errors import EdgenasError

SPLIT_SEED = 0


@dataclass
class Dataset:
    """Train and validation tensors (N x C x H x W, normalised) with integer labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    _cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.x_train.shape[-1])

    def at_resolution(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and validation images resized to ``resolution`` x ``resolution`` (cached)."""
        if resolution == self.resolution:
            return self.x_train, self.x_val
        if resolution not in self._cache:
            self._cache[resolution] = (_resize(self.x_train, resolution), _resize(self.x_val, resolution))
        return self._cache[resolution]

    def batch(self, size: int, seed: int = 0, resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded random batch of training images and labels (for zero-shot proxies)."""
        x, _ = self.at_resolution(resolution or self.resolution)
        if size > len(x):
            raise EdgenasError(f"asked for a batch of {size} images but the data set has {len(x)}")
        idx = torch.from_numpy(np.random.default_rng(seed).choice(len(x), size, replace=False))
        return x[idx], self.y_train[idx]

    def to(self, device: str | torch.device) -> Dataset:
        """The same data set with its tensors on ``device`` (e.g. ``"cuda"``); itself if already there."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device), self.x_val.to(device),
                       self.y_val.to(device), self.num_classes)

    def subset(self, max_train: int | None = None, max_val: int | None = None) -> Dataset:
        """The first ``max_train`` / ``max_val`` examples (splits are already shuffled)."""
        return Dataset(
            self.name,
            self.x_train[:max_train],
            self.y_train[:max_train],
            self.x_val[:max_val],
            self.y_val[:max_val],
            self.num_classes,
        )


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    out = []
    for chunk in torch.split(x, 1024):
        out.append(
            F.interpolate(chunk, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=resolution < chunk.shape[-1])
        )
    return torch.cat(out)


def _stratified_split(y: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _from_arrays(
    name: str, x: np.ndarray, y: np.ndarray, val_fraction: float,
    x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
) -> Dataset:
    """Build a Dataset from NHWC (uint8 or float in [0,1]) arrays, normalising with train statistics."""

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        t = t.float() / 255.0 if a.dtype == np.uint8 else t.float()
        return t.permute(0, 3, 1, 2).contiguous()

    if x_val is None:
        tr, va = _stratified_split(y, val_fraction)
        x, x_val, y, y_val = x[tr], x[va], y[tr], y[va]
    xt, xv = to_tensor(x), to_tensor(x_val)
    mean = xt.mean((0, 2, 3), keepdim=True)
    std = xt.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    classes = int(max(y.max(), y_val.max()) + 1)
    return Dataset(
        name, (xt - mean) / std, torch.from_numpy(y.astype(np.int64)),
        (xv - mean) / std, torch.from_numpy(y_val.astype(np.int64)), classes,
    )


def load_digits_dataset(val_fraction: float = 0.2) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return _from_arrays("digits", x, d.target.astype(np.int64), val_fraction)


def _require(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not path or not p.exists():
        raise EdgenasError(f"{what} path '{path}' does not exist; give an existing file or folder")
    return p


def load_npz_dataset(path: str, val_fraction: float = 0.2) -> Dataset:
    p = _require(path, "npz data")
    files = sorted(glob.glob(str(p / "*.npz"))) if p.is_dir() else [str(p)]
    if not files:
        raise EdgenasError(f"no .npz files in '{path}'; expected files with arrays 'x' and 'y'")
    xs, ys = [], []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                if "x" not in z or "y" not in z:
                    raise EdgenasError(f"'{f}' lacks array 'x' or 'y' (has {', '.join(z.files)})")
                xs.append(z["x"])
                ys.append(z["y"])
        except EdgenasError:
            raise
        except Exception as exc:  # zipfile/npy format errors
            raise EdgenasError(f"'{f}' is not a valid .npz file ({type(exc).__name__}: {exc})") from None
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) != len(y):
        raise EdgenasError(f"npz data in '{path}': 'x' must be N x H x W x C and match 'y' ({x.shape}, {y.shape})")
    return _from_arrays(f"npz:{path}", x, y.astype(np.int64), val_fraction)


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        raise EdgenasError(f"'{path}' is not a CIFAR-10 binary batch (size not a multiple of 3073 bytes)")
    raw = raw.reshape(-1, 3073)
    return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0].astype(np.int64)


def load_cifar10_dataset(path: str) -> Dataset:
    p = _require(path, "CIFAR-10")
    if (p / "cifar-10-batches-bin").is_dir():
        p = p / "cifar-10-batches-bin"
    train_files = sorted(p.glob("data_batch_*.bin"))
    if not train_files or not (p / "test_batch.bin").exists():
        raise EdgenasError(
            f"'{path}' is not CIFAR-10's binary distribution (needs data_batch_1..5.bin and test_batch.bin)"
        )
    parts = [_read_cifar_bin(f) for f in train_files]
    xv, yv = _read_cifar_bin(p / "test_batch.bin")
    return _from_arrays(
        "cifar10", np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts]), 0.0, xv, yv
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _read_folder(root: Path, size: int, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    classes = classes or sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise EdgenasError(f"image folder '{root}' has no class sub-folders")
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted((root / c).iterdir()) if (root / c).is_dir() else []:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as img:
                    xs.append(np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR)))
                ys.append(label)
    if not xs:
        raise EdgenasError(f"image folder '{root}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(xs), np.asarray(ys, dtype=np.int64), classes


def load_folder_dataset(path: str, size: int = 32, val_fraction: float = 0.2) -> Dataset:
    p = _require(path, "image folder")
    if (p / "train").is_dir() and (p / "val").is_dir():
        x, y, classes = _read_folder(p / "train", size)
        xv, yv, _ = _read_folder(p / "val", size, classes)
        return _from_arrays(f"folder:{path}", x, y, 0.0, xv, yv)
    x, y, _ = _read_folder(p, size)
    return _from_arrays(f"folder:{path}", x, y, val_fraction)


def load_synthetic_dataset(n: int = 600, classes: int = 10, size: int = 16, channels: int = 3) -> Dataset:
    """Class-dependent low-frequency patterns plus noise: learnable, tiny, deterministic."""
    rng = np.random.default_rng(SPLIT_SEED)
    protos = rng.normal(size=(classes, 4, 4, channels))
    y = np.arange(n) % classes
    base = np.repeat(np.repeat(protos[y], size // 4, axis=1), size // 4, axis=2)
    x = (base + 0.5 * rng.normal(size=base.shape)).astype(np.float32)
    return _from_arrays("synthetic", x, y.astype(np.int64), 0.2)


DATASETS = ("digits", "npz:PATH", "cifar10:PATH", "folder:PATH", "synthetic")


def load_dataset(spec: str, image_size: int = 32) -> Dataset:
    """Load a data set from its spec (see the module docstring)."""
    kind, _, path = spec.partition(":")
    path = os.path.expanduser(path)
    if kind == "digits" and not path:
        return load_digits_dataset()
    if kind == "synthetic" and not path:
        return load_synthetic_dataset()
    if kind == "npz":
        return load_npz_dataset(path)
    if kind == "cifar10":
        return load_cifar10_dataset(path)
    if kind == "folder":
        return load_folder_dataset(path, image_size)
    from edgenas.errors import unknown_name

    if path:
        raise EdgenasError(f"unknown data kind '{kind}' in '{spec}'; valid: {', '.join(DATASETS)}")
    raise unknown_name("data set", spec, DATASETS)
