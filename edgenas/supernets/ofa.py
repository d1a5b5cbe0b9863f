"""The Once-for-All elastic MobileNetV3 supernet of an :class:`~edgenas.spaces.mbv3.MBV3Space`.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment" (ICLR 2020). One
network holds the weights of every subnet of the space: elastic depth (the first ``d`` blocks of each
stage run), elastic expand ratio (the first, most important, hidden channels of each block), elastic
kernel (centre + learned transformation, see :mod:`edgenas.supernets.dynamic`), elastic resolution (any
input size; the trainer draws one per batch) and, beyond OFA (which trains one supernet per width
multiplier), an elastic width multiplier (the first channels of every layer).

Contract (the project's supernet contract):

- ``set_active(arch)`` selects a subnet (validated by the space);
- ``forward(x)`` runs the active subnet;
- ``extract(arch)`` returns ``space.build(arch, ...)`` -- exactly the standalone network the rest of the
  toolkit builds, exports and times -- with the subnet's weights and BN statistics copied in.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.models.blocks import activation, make_divisible
from edgenas.spaces.base import Arch
from edgenas.spaces.mbv3 import MBV3Space
from edgenas.supernets.dynamic import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    DynamicSqueezeExcite,
    permute_,
    permute_bn_,
)


class DynamicConvBNAct(nn.Module):
    """Elastic conv, BN and activation (the counterpart of :class:`edgenas.models.blocks.ConvBNAct`)."""

    def __init__(self, max_in: int, max_out: int, kernel: int | tuple[int, ...] = 1, stride: int = 1,
                 depthwise: bool = False, act: str = "relu") -> None:
        super().__init__()
        self.conv = DynamicConv2d(max_in, max_out, kernel, stride, depthwise)
        self.bn = DynamicBatchNorm2d(max_out)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def copy_to(self, target: nn.Sequential) -> None:
        self.conv.copy_to(target[0])
        self.bn.copy_to(target[1])


class DynamicMBConv(nn.Module):
    """An inverted residual block with elastic kernel, expand ratio and input / output channels."""

    def __init__(self, max_in: int, max_out: int, kernels: tuple[int, ...], expands: tuple[int, ...],
                 stride: int, act: str, use_se: bool, divisor: int) -> None:
        super().__init__()
        self.max_in, self.max_out, self.stride, self.divisor = max_in, max_out, stride, divisor
        self.kernels, self.expands = tuple(kernels), tuple(expands)
        self.has_expand = max(expands) != 1
        max_hidden = make_divisible(max_in * max(expands), divisor) if self.has_expand else max_in
        self.max_hidden = max_hidden
        self.expand = DynamicConvBNAct(max_in, max_hidden, 1, act=act) if self.has_expand else None
        self.depthwise = DynamicConvBNAct(max_hidden, max_hidden, self.kernels, stride, depthwise=True, act=act)
        self.se = DynamicSqueezeExcite(max_hidden, divisor) if use_se else None
        self.project = DynamicConvBNAct(max_hidden, max_out, 1, act="none")
        self.active_kernel, self.active_expand, self.active_out = max(kernels), max(expands), max_out

    @property
    def residual(self) -> bool:
        """Whether the block adds its input at full size (stride 1, as many channels out as in)."""
        return self.stride == 1 and self.max_in == self.max_out

    def set_active(self, kernel: int, expand: int, cout: int) -> None:
        self.active_kernel, self.active_expand, self.active_out = kernel, expand, cout
        self.depthwise.conv.active_kernel = kernel
        self.project.conv.active_out = cout

    def hidden(self, cin: int) -> int:
        return make_divisible(cin * self.active_expand, self.divisor) if self.has_expand else cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        if self.expand is not None:
            self.expand.conv.active_out = self.hidden(cin)
            y = self.expand(x)
        else:
            y = x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.stride == 1 and cin == self.active_out else y

    def copy_to(self, block: nn.Module) -> None:
        if self.expand is not None:
            self.expand.copy_to(block.expand)
        self.depthwise.copy_to(block.depthwise)
        if self.se is not None:
            self.se.copy_to(block.se)
        self.project.copy_to(block.project)

    # ------------------------------------------------------------- width sorting
    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the hidden channels by importance (L1 norm of the project conv's input weights, OFA
        section 3.3), consistently across the expand conv + BN, the depthwise conv + BN, the SE block and
        the project conv, so the full block computes the same function; the SE's own hidden channels are
        sorted the same way (by the L1 norm of its expand conv's input weights)."""
        if self.expand is None:  # the hidden channels are the block's input: nothing to sort
            return
        importance = self.project.conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        permute_(self.expand.conv.weight, order, 0)
        permute_bn_(self.expand.bn.bn, order)
        permute_(self.depthwise.conv.weight, order, 0)
        permute_bn_(self.depthwise.bn.bn, order)
        if self.se is not None:
            permute_(self.se.reduce.weight, order, 1)
            permute_(self.se.expand.weight, order, 0)
            permute_(self.se.expand.bias, order, 0)
            se_order = torch.argsort(self.se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
            permute_(self.se.reduce.weight, se_order, 0)
            permute_(self.se.reduce.bias, se_order, 0)
            permute_(self.se.expand.weight, se_order, 1)
        permute_(self.project.conv.weight, order, 1)


class OFAMobileNetV3(nn.Module):
    """The elastic supernet of an MBV3 space (see the module docstring)."""

    def __init__(self, space: MBV3Space, num_classes: int, in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(space, MBV3Space):
            raise EdgenasError(f"the OFA supernet needs an MBV3-style space (mbv3, mbv3-tiny); '{space.name}' is not")
        self.space, self.num_classes, self.in_channels = space, int(num_classes), int(in_channels)
        cfg = space.mbv3
        self.cfg = cfg
        ch = self._channels(max(cfg.widths))
        div = cfg.channel_divisor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = DynamicConvBNAct(in_channels, ch["stem"], 3, 2, act="hswish")
            self.first = DynamicMBConv(ch["stem"], ch["first"], (3,), (1,), 1, "relu", False, div)
            self.stages = nn.ModuleList()
            cin = ch["first"]
            for i in range(cfg.num_stages):
                cout = ch["stages"][i]
                stage = nn.ModuleList()
                for j in range(cfg.max_depth):
                    stride = cfg.stage_strides[i] if j == 0 else 1
                    stage.append(DynamicMBConv(cin, cout, tuple(cfg.kernels), tuple(cfg.expands), stride,
                                               cfg.stage_activations[i], cfg.stage_se[i], div))
                    cin = cout
                self.stages.append(stage)
            self.final_expand = DynamicConvBNAct(cin, ch["final"], 1, act="hswish")
            self.mix = DynamicConv2d(ch["final"], ch["feature"], 1)
            self.mix_act = nn.Hardswish()
            self.dropout = nn.Dropout(cfg.dropout)
            self.classifier = DynamicLinear(ch["feature"], num_classes)
        self.active: Arch = {}
        self.set_active(self.largest())

    # ------------------------------------------------------------------ archs
    def _channels(self, width: float) -> dict[str, Any]:
        cfg, div = self.cfg, self.cfg.channel_divisor

        def c(v: int) -> int:
            return make_divisible(v * width, div)

        return {"stem": c(cfg.stem_channels), "first": c(cfg.first_block_channels),
                "stages": [c(v) for v in cfg.stage_channels], "final": c(cfg.final_expand_channels),
                "feature": c(cfg.feature_channels)}

    def largest(self) -> Arch:
        """The full network: every dimension at its largest choice."""
        return self.space.validate({d.name: max(d.choices) for d in self.space.dimensions})

    def built_for(self) -> dict[str, Any]:
        """What this supernet was built for (stored in checkpoints and checked when they are loaded)."""
        return {"space": self.space.name, "space_config": self.space.to_dict(), "num_classes": self.num_classes,
                "in_channels": self.in_channels}

    def set_active(self, arch: Mapping[str, Any]) -> Arch:
        """Select the subnet ``arch`` (validated; returns its canonical form)."""
        arch = self.space.validate(arch)
        ch = self._channels(float(arch["width"]))
        self.stem.conv.active_out = ch["stem"]
        self.first.set_active(3, 1, ch["first"])
        self.depths = []
        for i, stage in enumerate(self.stages, start=1):
            depth = int(arch[f"s{i}.depth"])
            self.depths.append(depth)
            for j, block in enumerate(stage, start=1):
                if j <= depth:
                    block.set_active(int(arch[f"s{i}.b{j}.kernel"]), int(arch[f"s{i}.b{j}.expand"]),
                                     ch["stages"][i - 1])
        self.final_expand.conv.active_out = ch["final"]
        self.mix.active_out = ch["feature"]
        self.active = arch
        return arch

    # ---------------------------------------------------------------- forward
    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.first(self.stem(x))
        for stage, depth in zip(self.stages, self.depths, strict=True):
            for block in stage[:depth]:
                y = block(y)
        return self.final_expand(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix_act(self.mix(self.features(x).mean((2, 3), keepdim=True))).flatten(1)
        return self.classifier(self.dropout(y))

    # ---------------------------------------------------------------- extract
    @torch.no_grad()
    def extract(self, arch: Mapping[str, Any] | None = None) -> nn.Module:
        """The standalone network of ``arch`` (default: the active one) as ``space.build`` makes it, with
        this supernet's weights and BN statistics copied in (recalibrate them with
        :func:`edgenas.supernets.bn_calibration.recalibrate_bn` before evaluating)."""
        previous = self.active
        arch = self.set_active(arch if arch is not None else previous)
        try:
            model = self.space.build(arch, self.num_classes, self.in_channels)
            self.stem.copy_to(model.stem)
            blocks = list(model.blocks)
            self.first.copy_to(blocks[0])
            k = 1
            for stage, depth in zip(self.stages, self.depths, strict=True):
                for block in stage[:depth]:
                    block.copy_to(blocks[k])
                    k += 1
            self.final_expand.copy_to(model.head.final_expand)
            self.mix.copy_to(model.head.mix[0])
            self.classifier.copy_to(model.classifier[1])
        finally:
            self.set_active(previous)
        return model.to(self.stem.conv.weight.device).train(self.training)

    def clone_active(self) -> OFAMobileNetV3:
        """A deep copy (used as the frozen teacher of knowledge distillation)."""
        return copy.deepcopy(self)

    # ------------------------------------------------------------ width sort
    def sort_channels(self) -> None:
        """Sort every block's hidden channels by importance (before the width phase)."""
        for stage in self.stages:
            for block in stage:
                block.sort_channels()
