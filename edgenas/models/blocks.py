"""Building blocks of mobile networks: conv-BN-activation, squeeze-excite and MBConv.

MBConv is the inverted residual block of MobileNetV2 (Sandler et al., CVPR 2018) with the squeeze-excite
and hard-swish of MobileNetV3 (Howard et al., ICCV 2019), as used by ProxylessNAS and Once-for-All.
"""

from __future__ import annotations

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going more than 10% below it
    (the channel rounding rule of the MobileNet family)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def activation(name: str) -> nn.Module:
    """``relu``, ``hswish``, ``hsigmoid`` or ``none``."""
    table = {"relu": nn.ReLU, "hswish": nn.Hardswish, "hsigmoid": nn.Hardsigmoid, "none": nn.Identity}
    if name not in table:
        raise ValueError(f"unknown activation '{name}'; valid: {', '.join(table)}")
    return table[name]()


class ConvBNAct(nn.Sequential):
    """A bias-free convolution (same padding), batch norm and an activation."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str = "relu"
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            activation(act),
        )


class SqueezeExcite(nn.Module):
    """Channel attention of Hu et al. (CVPR 2018) with MobileNetV3's hard-sigmoid gate."""

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(self, channels: int, reduction: int = 4, divisor: int = 8) -> None:
        super().__init__()
        hidden = make_divisible(channels / reduction, divisor)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, kxk depthwise, optional squeeze-excite, 1x1 project.

    The residual connection is used when the stride is 1 and the channel count is unchanged.
    """

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        expand: int,
        stride: int,
        act: str = "relu",
        use_se: bool = False,
        divisor: int = 8,
    ) -> None:
        super().__init__()
        hidden = make_divisible(cin * expand, divisor)
        self.cin, self.cout, self.kernel, self.expand_ratio, self.stride = cin, cout, kernel, expand, stride
        self.hidden = hidden
        self.expand = ConvBNAct(cin, hidden, 1, act=act) if expand != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act)
        self.se = SqueezeExcite(hidden, divisor=divisor) if use_se else None
        self.project = ConvBNAct(hidden, cout, 1, act="none")
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit BN, small-normal linear layers (the MobileNet recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def zero_last_gamma(model: nn.Module) -> int:
    """Start every residual MBConv as the identity: zero the scale (gamma) of its projection's batch norm.

    The zero-gamma initialisation of Goyal et al. ("Accurate, Large Minibatch SGD", 2017), also offered by the
    Once-for-All and ProxylessNAS networks (``zero_last_gamma``): a deep network then starts as shallow as its
    transition blocks and its residual branches grow in as they learn, so a short training recipe no longer
    punishes depth. For training from scratch only: applied to trained weights it would erase the branches, and
    zero-cost proxies score the network as built (with it, the residual branches would get no gradient).
    Returns how many blocks were changed.
    """
    changed = 0
    for m in model.modules():  # MBConv and the supernets' elastic MBConvs: a ``residual`` flag and a ``project``
        if getattr(m, "residual", False) is True and isinstance(getattr(m, "project", None), nn.Module):
            norms = [b for b in m.project.modules() if isinstance(b, nn.BatchNorm2d)]
            if norms:
                nn.init.zeros_(norms[-1].weight)
                changed += 1
    return changed
