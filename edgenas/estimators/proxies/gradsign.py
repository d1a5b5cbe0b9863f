"""GradSign: how consistently the samples of a batch agree on the sign of each weight's gradient.

Zhang & Jia, "GradSign: Model Performance Inference with Theoretical Insights" (ICLR 2022). With
``g_ik`` the gradient of sample ``i``'s own loss with respect to parameter ``k`` at one initialisation,

    tau = sum_k | sum_i sign(g_ik) |

over the conv/linear weights: a dense region of sample-wise local optima (all samples pulling a weight the
same way) predicts a lower training loss and better generalisation.

As in the authors' per-sample loop, each sample's loss is that of the network run on that sample alone,
so batch norm normalises with the sample's own statistics. Where that is impossible (a BN layer sees a
single value per channel, e.g. a 1x1 feature map) the proxy falls back to batch norm frozen at the whole
batch's statistics. Either way no sample's output depends on another's, so all per-sample gradients come
from one batched pass, never a Python loop over samples:

* networks whose weight layers are all ``Conv2d`` / ``Linear`` (the usual case): one forward pass (batch
  norm as instance statistics) and one backward pass of the *summed* per-sample losses, which gives each
  sample's own output gradient at every layer; each layer's per-sample weight gradients are then products
  of its unfolded input and that gradient (the per-sample-gradient method of Opacus, Yousefpour et al.,
  2021), a chunk of samples at a time (``GRADIENT_BUDGET``); on maps of 16x16 and more, one batched product
  per kernel tap with a shifted view of the input instead of unfolding it
  (:func:`per_sample_conv_gradients_by_shifts`). The same signs as ``vmap``, faster on NB201 cells, and
  only one layer's per-sample gradients held at a time;
* any other network: ``torch.func`` (``vmap`` of ``grad`` of a functional call), a chunk of samples at a
  time (as many as keep the per-sample gradients under ``GRADIENT_BUDGET`` floats, at most 64).
"""

from __future__ import annotations

from typing import Any

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
SHIFT_MIN_AREA = 256  # output maps at least this large (16x16) take the shifted-product path (measured faster)


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


class _NeedsBatchStatistics(ValueError):
    """A BN layer sees one value per channel and sample: per-sample statistics are undefined."""

    def __init__(self) -> None:
        super().__init__("expected more than 1 value per channel (per-sample batch norm)")


def _use_instance_statistics(bn: nn.Module) -> None:
    """Make a BN layer normalise each sample with its own statistics (what it computes on a batch of one)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x[0, 0].numel() < 2:
            raise _NeedsBatchStatistics()
        return F.instance_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

    bn.forward = forward


def hooks_apply(net: nn.Module) -> bool:
    """Whether :func:`per_sample_gradient_signs_by_hooks` handles ``net``: every weight layer a Linear or a
    Conv2d with numeric zero padding."""
    return all(isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.padding_mode == "zeros"
                                            and not isinstance(m.padding, str))
               for m in net.modules() if isinstance(m, WEIGHT_LAYERS))


def per_sample_gradient_signs_by_hooks(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_i sign(dL_i/dw)`` for every Conv2d/Linear weight of ``net``, whose samples must not interact
    (batch norm per sample or frozen): one batched forward and backward pass, then per-sample weight
    gradients from each layer's inputs and output gradients (see the module docstring). Changes ``net``'s
    ``requires_grad`` flags: call it on a private copy."""
    layers = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in layers}
    handles = []

    def record(name: str) -> Any:
        def on_output(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            if out.requires_grad:  # else the input is constant zeros here and the gradient is zero
                a = inputs[0].detach()
                out.register_hook(lambda g: seen[name].append((a, g.detach())))
        return on_output

    for p in net.parameters():
        p.requires_grad_(False)  # the batched backward needs only activation gradients
    try:
        for name, m in layers.items():
            handles.append(m.register_forward_hook(record(name)))
        out = net(x.detach().clone().requires_grad_(True))
        out = out[-1] if isinstance(out, tuple | list) else out
        F.cross_entropy(out, y, reduction="sum").backward()  # sample i's activation gradients = dL_i/da_i
    finally:
        for h in handles:
            h.remove()
    return {f"{name}.weight" if name else "weight": _sign_sum(layers[name], uses)
            for name, uses in seen.items()}


def _sign_sum(layer: nn.Module, uses: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``sum_i sign(g_i)`` of one layer's per-sample weight gradients ``g_i`` (summed over its uses)."""
    if not uses:
        return torch.zeros_like(layer.weight)
    n = len(uses[0][0])
    per_sample = max(1, sum(_unfolded_size(layer, a) for a, _ in uses) // n)
    chunk = max(1, min(n, GRADIENT_BUDGET // per_sample))
    total = torch.zeros_like(layer.weight)
    for lo in range(0, n, chunk):
        grads = sum(_per_sample_weight_gradients(layer, a[lo:lo + chunk], g[lo:lo + chunk]) for a, g in uses)
        total += grads.sign().sum(0)
    return total


def _unfolded_size(layer: nn.Module, a: torch.Tensor) -> int:
    """Floats that the unfolded input and the per-sample gradients of ``a``'s samples take."""
    area = 1 if isinstance(layer, nn.Linear) else layer.weight[0, 0].numel()
    return a.numel() * area + len(a) * layer.weight.numel()


def _per_sample_weight_gradients(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(n, *weight.shape)``: each sample's weight gradient from its layer input ``a`` and output gradient ``g``."""
    n = len(a)
    if isinstance(layer, nn.Linear):
        return torch.bmm(g.reshape(n, -1, g.shape[-1]).transpose(1, 2), a.reshape(n, -1, a.shape[-1]))
    if layer.groups == 1 and layer.stride == (1, 1) and g.shape[-2] * g.shape[-1] >= SHIFT_MIN_AREA:
        return per_sample_conv_gradients_by_shifts(layer, a, g)
    cols = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (n, Cin*k*k, P)
    G = layer.groups
    cols = cols.reshape(n, G, -1, cols.shape[-1])
    grads = torch.matmul(g.reshape(n, G, -1, cols.shape[-1]), cols.transpose(2, 3))  # (n, G, Cout/G, Cin/G*k*k)
    return grads.reshape(n, *layer.weight.shape)


def per_sample_conv_gradients_by_shifts(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(n, *weight.shape)``: per-sample weight gradients of a stride-1, ungrouped conv without unfolding.

    Each kernel tap ``(i, j)`` is one batched matrix product of the output gradient with the padded input
    shifted by the tap: the input is padded and flattened row by row, so that a tap's shifted input is a
    strided view (offset ``i * dilation * padded_width + j * dilation``), and the output gradient is
    widened to the padded width with zero columns, which cancel the wrap-around at each row's end. No
    ``k x k``-fold copy of the input (``im2col``) is made: about twice as fast as unfolding on 32x32 maps.
    """
    n, c_in = a.shape[:2]
    (kh, kw), (dh, dw), (ph, pw) = layer.kernel_size, layer.dilation, layer.padding
    out_h, out_w = g.shape[-2:]
    padded_w = a.shape[-1] + 2 * pw
    flat = F.pad(F.pad(a, (pw, pw, ph, ph)).flatten(2), (0, dw * (kw - 1)))  # the last row's taps stay in range
    rows = out_h * padded_w
    g_flat = (F.pad(g, (0, padded_w - out_w)) if padded_w != out_w else g).flatten(2)  # (n, Cout, rows)
    flat_t = flat.transpose(1, 2)  # (n, positions, Cin)
    taps = [torch.bmm(g_flat, flat_t[:, offset:offset + rows])
            for offset in (i * dh * padded_w + j * dw for i in range(kh) for j in range(kw))]
    return torch.stack(taps, -1).reshape(n, g.shape[1], c_in, kh, kw)


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
            if hooks_apply(net):
                for bn in (m for m in net.modules() if isinstance(m, BATCHNORMS)):
                    _use_instance_statistics(bn)
                return _tau(per_sample_gradient_signs_by_hooks(net, x, y))
            replace_all_batch_norm_modules_(net)
            return _tau(per_sample_gradient_signs(net, x, y, chunk))

        def frozen_bn() -> float:
            net = train_mode(fresh_model(model))
            _freeze_batch_statistics(net, x)
            if hooks_apply(net):
                return _tau(per_sample_gradient_signs_by_hooks(net, x, y))
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
