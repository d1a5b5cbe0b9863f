"""The NAS-Bench-201 CIFAR network, built from an architecture of the ``nb201`` space.

Dong & Yang, "NAS-Bench-201" (ICLR 2020), section 2.1: a 3x3 conv stem (C channels) and BN, three stages
of N cells at C, 2C and 4C channels separated by residual reduction blocks, then BN-ReLU, global average
pooling and a linear classifier. With C=16, N=5 and 10 classes its parameter count is the benchmark's
(e.g. 0.129306 M and 0.802426 M for rows 0 and 1 of the table):

* ``nor_conv_kxk`` is ReLU -> conv (no bias) -> BN (affine): ``C*C*k*k + 2C`` parameters;
* ``skip_connect``, ``avg_pool_3x3`` (3x3, stride 1, padding not counted) and ``none`` (zeros) have none;
* the reduction block is a ResNet basic block: two ReLU-conv3x3-BN (the first with stride 2) plus a
  shortcut of 2x2 average pooling and a 1x1 conv (no BN);
* every edge's operation exists in every cell, even where the cell's wiring leaves its output unused, as
  in the benchmark's own networks.

:func:`edgenas.spaces.nb201.nb201_param_count` gives the same count in closed form, without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.spaces.nb201 import EDGES, NB201Config, NB201Space


class ReLUConvBN(nn.Sequential):
    """ReLU, a bias-free convolution and batch norm (NB201's ``nor_conv`` ordering)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


class _BoxSum3x3(torch.autograd.Function):
    """Per-channel sums over 3x3 windows (zero padding 1), as a depthwise convolution with a ones kernel.

    The operator is linear and self-adjoint (the kernel is symmetric), so its backward is the operator
    itself, applied through this Function again: a double backward (GraSP's Hessian-vector product) never
    differentiates a convolution with respect to the constant kernel, which PyTorch's generic convolution
    double backward does for grouped convolutions, one group at a time (~10 % of GraSP on NB201 cells).
    """

    generate_vmap_rule = True  # per-sample gradients (GradSign's torch.func.vmap) go through it

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        kernel = torch.ones(x.shape[1], 1, 3, 3, dtype=x.dtype, device=x.device)
        return F.conv2d(x, kernel, padding=1, groups=x.shape[1])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        pass  # linear: the backward needs nothing saved

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _BoxSum3x3.apply(grad)


class AvgPool3x3(nn.AvgPool2d):
    """NB201's ``avg_pool_3x3``: 3x3 average pooling, stride 1, padding 1, padding not counted.

    The same function as ``nn.AvgPool2d(3, 1, 1, count_include_pad=False)`` (equal up to float rounding),
    computed as a depthwise convolution with an all-ones kernel times the reciprocal of each pixel's
    window size. PyTorch's CPU pooling kernel is scalar code: on a batch of 64 CIFAR images this is 3-6x
    faster forward and 3-16x faster backward, which matters to the zero-shot proxies (they run forward,
    backward and double backward through every cell). Symbolic tracing (torch.fx) and ONNX export see
    the plain pooling op.
    """

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(self, channels: int) -> None:
        super().__init__(3, stride=1, padding=1, count_include_pad=False)
        self.channels = int(channels)
        self._inv_window: dict[tuple[int, int, torch.dtype, torch.device], torch.Tensor] = {}

    def _inverse_window(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (height, width, dtype, device)
        if key not in self._inv_window:  # pixels in each window: counted, not convolved (no MACs to count)
            def inside(n: int) -> torch.Tensor:
                i = torch.arange(n, device=device)
                return (torch.clamp(i + 1, max=n - 1) - torch.clamp(i - 1, min=0) + 1).to(dtype)

            window = inside(height)[:, None] * inside(width)[None, :]
            self._inv_window[key] = window.reciprocal().reshape(1, 1, height, width)
        return self._inv_window[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy) or torch.onnx.is_in_onnx_export() or x.dim() != 4 \
                or x.shape[1] != self.channels:
            return super().forward(x)
        pooled = _BoxSum3x3.apply(x)
        return pooled * self._inverse_window(x.shape[2], x.shape[3], x.dtype, x.device)


def make_op(name: str, channels: int) -> nn.Module | None:
    """The module of one edge operation (stride 1, same channels); ``None`` for ``none``."""
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return AvgPool3x3(channels)
    raise ValueError(f"unknown NB201 op '{name}'")


class NB201Cell(nn.Module):
    """A cell: node 0 is the input; node j = sum over i < j of op_ij(node i); the output is node 3.

    A ``none`` edge contributes zeros (it is simply left out of the sum); a node with only ``none``
    inputs is all zeros.
    """

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(self, ops: list[str], channels: int) -> None:
        super().__init__()
        self.op_names = list(ops)
        self.edges = nn.ModuleList([make_op(op, channels) or nn.Identity() for op in ops])
        self._live = [op != "none" for op in ops]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, 4):
            total: torch.Tensor | None = None
            for k, (i, jj) in enumerate(EDGES):
                if jj != j or not self._live[k]:
                    continue
                y = self.edges[k](nodes[i])
                total = y if total is None else total + y
            nodes.append(total if total is not None else torch.zeros_like(x))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's reduction block: a ResNet basic block with stride 2 (He et al., CVPR 2016) whose shortcut is
    2x2 average pooling followed by a 1x1 conv."""

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Net(nn.Module):
    """``stem -> cells/reductions -> BN-ReLU -> global pooling -> linear``."""

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(self, ops: list[str], num_classes: int, in_channels: int, cfg: NB201Config) -> None:
        super().__init__()
        c, n = cfg.channels, cfg.cells_per_stage
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                layers.append(ResidualReduction(width // 2, width))
            layers.extend(NB201Cell(ops, width) for _ in range(n))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * c), nn.ReLU())
        self.classifier = nn.Linear(4 * c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling (after the final BN-ReLU)."""
        return self.lastact(self.cells(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def build_nb201(
    space: NB201Space, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3, seed: int = 0
) -> NB201Net:
    """Build the network of ``arch`` (already validated); PyTorch's default initialisation, drawn from
    ``seed`` without touching the global generator's state."""
    cfg = space.nb201 if isinstance(space, NB201Space) else NB201Config(**space.config)
    ops = [str(arch[name]) for name in space.names]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NB201Net(ops, num_classes, in_channels, cfg)

