"""Training-time augmentation of image batches: random crops of a zero-padded image and horizontal flips.

The standard small-image recipe (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
section 4.2: 4 pixels of padding on 32 x 32 CIFAR images, a random 32 x 32 crop, a random horizontal flip).
One gather builds the whole augmented batch on whatever device it lives on, so a GPU run does not wait for
the host; the random offsets come from a CPU generator, so a seeded run is reproducible on any device.
Images are normalised, so zero padding is padding with the data set's mean colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int | None = None,
                     flip: bool = True) -> torch.Tensor:
    """A randomly shifted (by up to ``pad`` pixels each way; default an eighth of the side) and, with
    ``flip``, half the time mirrored copy of every image of the batch ``x`` (N x C x H x W). The result has
    the channels-last memory layout."""
    n, _, h, w = x.shape
    pad = max(1, h // 8) if pad is None else int(pad)
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    mirrored = torch.rand(n, 1, generator=generator) < 0.5 if flip else torch.zeros(n, 1, dtype=torch.bool)
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    cols = torch.where(mirrored, cols.flip(1), cols)
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    batch = torch.arange(n, device=dev)[:, None, None]
    # indices on dims 0, 2 and 3 around a slice: the result is N x H x W x C (channels last)
    out = padded[batch, :, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]
    return out.permute(0, 3, 1, 2)
