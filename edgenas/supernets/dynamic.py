"""Elastic layers: convolutions, batch norm, squeeze-excite and linear layers that run at any channel count
up to their maximum, and depthwise convolutions with an elastic kernel size.

Once-for-All (Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment",
ICLR 2020), section 3.3:

- **elastic width**: an active layer uses the *first* ``c`` channels of the shared weights; the channels
  are sorted by importance (:func:`sort_mbconv_channels`) before the width phase, so the first ones are
  the most important;
- **elastic kernel**: a ``k x k`` kernel is the centre of the next larger one, passed through a learned
  ``k^2 x k^2`` kernel-transformation matrix shared by the channels of one layer (one matrix per layer
  and per step: 7->5, 5->3), initialised to the identity, so that at initialisation a smaller kernel is
  exactly the centre crop of the larger one.

Each layer reads its active input channel count from the tensor it receives, and its active output
channels / kernel from plain attributes set by the supernet's ``set_active`` (per instance, no global
switch). ``weight_for(shape)`` returns the active weight for a target shape; extraction copies it into a
standalone layer of that shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.models.blocks import make_divisible


def centre_crop(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The central ``k x k`` window of a ``(..., K, K)`` kernel."""
    K = weight.shape[-1]
    start = (K - k) // 2
    return weight[..., start : start + k, start : start + k]


class DynamicConv2d(nn.Module):
    """A bias-free (optionally biased) convolution with elastic input / output channels.

    ``depthwise=True`` makes a depthwise convolution (groups = channels) whose kernel is elastic too:
    ``kernels`` lists the sizes it may run at (the largest is stored), and ``transforms`` holds one
    identity-initialised matrix per step down (OFA's kernel transformation).
    """

    def __init__(self, max_in: int, max_out: int, kernel: int | tuple[int, ...] = 1, stride: int = 1,
                 depthwise: bool = False, bias: bool = False) -> None:
        super().__init__()
        kernels = tuple(sorted({kernel} if isinstance(kernel, int) else set(kernel), reverse=True))
        self.kernels, self.max_kernel = kernels, kernels[0]
        self.stride, self.depthwise = stride, depthwise
        self.max_in, self.max_out = max_in, max_out
        cin = 1 if depthwise else max_in
        self.weight = nn.Parameter(torch.empty(max_out, cin, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        if len(kernels) > 1 and not depthwise:
            raise ValueError("elastic kernels are supported on depthwise convolutions only (as in OFA)")
        # transforms["7to5"]: (25, 25) acting on the flattened centre of the larger kernel.
        self.transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(kernels[:-1], kernels[1:], strict=True)
        })
        self.active_out = max_out
        self.active_kernel = self.max_kernel

    def kernel_weight(self, weight: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k x k`` kernel of ``weight`` (``(C, 1, K, K)``): successive centre crops, each followed by
        its transformation matrix (OFA eq. for elastic kernel)."""
        if k not in self.kernels:
            raise ValueError(f"kernel {k} not among this layer's kernels {list(self.kernels)}")
        w = weight
        for big, small in zip(self.kernels[:-1], self.kernels[1:], strict=True):
            if big <= k:
                break
            c = centre_crop(w, small)
            flat = c.reshape(-1, small * small) @ self.transforms[f"{big}to{small}"].t()
            w = flat.reshape(c.shape)
        return w

    def weight_for(self, cout: int, cin: int, k: int | None = None) -> torch.Tensor:
        """The active weight with ``cout`` outputs, ``cin`` inputs and kernel ``k``."""
        k = k or self.active_kernel
        if self.depthwise:
            return self.kernel_weight(self.weight[:cout], k)
        w = self.weight[:cout, :cin]
        return w if k == self.max_kernel else centre_crop(w, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        cout = cin if self.depthwise else self.active_out
        w = self.weight_for(cout, cin)
        b = self.bias[:cout] if self.bias is not None else None
        k = w.shape[-1]
        return F.conv2d(x, w, b, self.stride, k // 2, 1, cin if self.depthwise else 1)

    def copy_to(self, conv: nn.Conv2d) -> None:
        """Copy the active weights into a standalone convolution of the target's shape."""
        cout, cin_g, k, _ = conv.weight.shape
        cin = conv.in_channels
        with torch.no_grad():
            conv.weight.copy_(self.weight_for(cout, cin, k))
            if conv.bias is not None:
                assert self.bias is not None
                conv.bias.copy_(self.bias[:cout])


class DynamicBatchNorm2d(nn.Module):
    """Batch norm over the first ``c`` channels of shared statistics and affine parameters."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, bn = x.shape[1], self.bn
        if c == bn.num_features:
            return bn(x)
        use_batch = bn.training or bn.running_mean is None
        if bn.training and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 0.0
        return F.batch_norm(
            x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c], use_batch, momentum, bn.eps,
        )

    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        with torch.no_grad():
            bn.weight.copy_(self.bn.weight[:c])
            bn.bias.copy_(self.bn.bias[:c])
            bn.running_mean.copy_(self.bn.running_mean[:c])
            bn.running_var.copy_(self.bn.running_var[:c])
            bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class DynamicSqueezeExcite(nn.Module):
    """Squeeze-excite whose channel count follows its input and whose hidden width is
    ``make_divisible(c / 4)`` of the active channels (the builder's rule)."""

    def __init__(self, max_channels: int, divisor: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.divisor, self.reduction = divisor, reduction
        max_hidden = make_divisible(max_channels / reduction, divisor)
        self.reduce = DynamicConv2d(max_channels, max_hidden, 1, bias=True)
        self.expand = DynamicConv2d(max_hidden, max_channels, 1, bias=True)
        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out")
        nn.init.kaiming_normal_(self.expand.weight, mode="fan_out")

    def hidden(self, channels: int) -> int:
        return make_divisible(channels / self.reduction, self.divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        self.reduce.active_out, self.expand.active_out = self.hidden(c), c
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))

    def copy_to(self, se: nn.Module) -> None:
        self.reduce.copy_to(se.reduce)
        self.expand.copy_to(se.expand)


class DynamicLinear(nn.Module):
    """A linear layer with elastic input features (the output is fixed: the classes)."""

    def __init__(self, max_in: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(max_in, out)
        nn.init.normal_(self.linear.weight, 0, 0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight[:, : x.shape[1]], self.linear.bias)

    def copy_to(self, linear: nn.Linear) -> None:
        with torch.no_grad():
            linear.weight.copy_(self.linear.weight[:, : linear.in_features])
            linear.bias.copy_(self.linear.bias)


def permute_(tensor: torch.Tensor, order: torch.Tensor, dim: int) -> None:
    """Reorder ``tensor`` in place along ``dim``."""
    with torch.no_grad():
        tensor.copy_(tensor.index_select(dim, order))


def permute_bn_(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        permute_(t, order, 0)
