"""GradSign: how consistently the samples of a batch agree on the sign of each weight's gradient.

Zhang & Jia, "GradSign: Model Performance Inference with Theoretical Insights" (ICLR 2022). With
``g_ik`` the gradient of sample ``i``'s own loss with respect to parameter ``k`` at one initialisation,

    tau = sum_k | sum_i sign(g_ik) |

over the conv/linear weights: a dense region of sample-wise local optima (all samples pulling a weight the
same way) predicts a lower training loss and better generalisation.

Per-sample gradients are computed at once with ``torch.func`` (``vmap`` of ``grad`` of a functional call),
a chunk of samples at a time (as many as keep the per-sample gradients under ``GRADIENT_BUDGET`` floats,
at most 64), rather than by a Python loop. As in the authors' per-sample
loop, each sample's loss is that of the network run on that sample alone, so batch norm normalises with
the sample's own statistics. Where that is impossible (a BN layer sees a single value per channel, e.g.
a 1x1 feature map) the proxy falls back to batch norm frozen at the whole batch's statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from edgenas.errors import EdgenasError
from edgenas.estimators.proxies.base import (
    BATCHNORMS,
    WEIGHT_LAYERS,
    Batch,
    ModelLike,
    fresh_model,
    run_forward,
    seeded,
    train_mode,
)

CHUNK = 64
GRADIENT_BUDGET = 64 * 1024 * 1024  # floats of per-sample gradients held at once (256 MB)


def per_sample_gradient_signs(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = CHUNK
) -> dict[str, torch.Tensor]:
    """``sum_i sign(dL_i/dw)`` for every conv/linear weight of ``net`` (the net's current mode)."""
    names = [
        f"{prefix}.weight" if prefix else "weight"
        for prefix, m in net.named_modules()
        if isinstance(m, WEIGHT_LAYERS) and m.weight is not None
    ]
    params = {k: v.detach() for k, v in net.named_parameters()}
    fixed = {k: v for k, v in params.items() if k not in names}
    fixed.update({k: v.detach() for k, v in net.named_buffers()})
    weights = {k: params[k] for k in names if k in params}

    def sample_loss(w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, {**fixed, **w}, (xi.unsqueeze(0),))
        if isinstance(out, tuple | list):
            out = out[-1]
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    n_weights = sum(v.numel() for v in weights.values())
    chunk = max(1, min(chunk, GRADIENT_BUDGET // max(1, n_weights)))
    totals = {k: torch.zeros_like(v) for k, v in weights.items()}
    for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
        grads = per_sample(weights, xs, ys)
        for k, g in grads.items():
            totals[k] += g.sign().sum(0)
    return totals


def _freeze_batch_statistics(net: nn.Module, x: torch.Tensor) -> None:
    """Set every BN layer's running statistics to those of ``x`` and switch BN to evaluation mode."""
    bns = [m for m in net.modules() if isinstance(m, BATCHNORMS) and m.track_running_stats]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = 1.0
    with torch.no_grad():
        net(x)
    for bn in bns:
        bn.eval()


def gradsign(model: ModelLike, batch: Batch, seed: int = 0, chunk: int = CHUNK) -> float:
    """GradSign's ``tau`` (higher is better)."""
    x, y = batch
    if y is None:
        raise EdgenasError("proxy 'gradsign' needs labels: pass a batch (x, y) with y")
    with seeded(seed):

        def per_sample_bn() -> float:
            net = train_mode(fresh_model(model))
            replace_all_batch_norm_modules_(net)
            return _tau(per_sample_gradient_signs(net, x, y, chunk))

        def frozen_bn() -> float:
            net = train_mode(fresh_model(model))
            _freeze_batch_statistics(net, x)
            return _tau(per_sample_gradient_signs(net, x, y, chunk))

        def compute() -> float:
            try:
                return per_sample_bn()
            except ValueError as exc:
                if "more than 1 value per channel" not in str(exc):
                    raise
            return frozen_bn()

        return run_forward(compute, "gradsign")

def _tau(sign_sums: dict[str, torch.Tensor]) -> float:
    return float(sum(s.abs().sum(dtype=torch.float64) for s in sign_sums.values()))
