"""FLOPs: the multiply-accumulates of one forward pass, a size baseline like #params.

Abdelfattah et al. (ICLR 2021) report it beside #params. Counted as MACs at batch 1 and the batch's
resolution by :func:`edgenas.hardware.flops.count_macs` (PyTorch's own flop counter).
"""

from __future__ import annotations

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies.base import Batch, ModelLike, model_to_read, run_forward


def flops(model: ModelLike, batch: Batch, seed: int = 0) -> float:
    """MACs of one input of the batch's shape (higher is better). Reads only the batch's shape."""
    from edgenas.hardware.flops import count_macs

    x, _ = batch
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise EdgenasError(
            f"proxy 'flops' needs square images N x C x R x R; got a batch of shape {tuple(x.shape)}"
        )
    net = model_to_read(model)  # count_macs restores the model's mode
    return run_forward(lambda: float(count_macs(net, int(x.shape[-1]), int(x.shape[1]))), "flops")
