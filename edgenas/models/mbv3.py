"""Build a standalone MobileNetV3-style network from an architecture of an :class:`MBV3Space`.

The skeleton follows Once-for-All's MobileNetV3 (Cai et al., ICLR 2020): a 3x3 stride-2 stem, a fixed
first MBConv (expand 1, kernel 3), the searchable stages, a 1x1 final-expand conv, global pooling, a 1x1
feature-mix conv and a linear classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from edgenas.models.blocks import ConvBNAct, MBConv, init_weights, make_divisible
from edgenas.spaces.mbv3 import MBV3Space


class MBV3Net(nn.Module):
    """A MobileNetV3-style network: ``stem -> first block -> stages -> head``."""

    PIECEWISE_ONLY_IN_SUBMODULES = True  # kinks only in activation modules (proxies.activation_pattern)

    def __init__(self, stem: nn.Module, blocks: nn.Sequential, head: nn.Module, classifier: nn.Module):
        super().__init__()
        self.stem, self.blocks, self.head, self.classifier = stem, blocks, head, classifier

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before global pooling (the pre-GAP map zero-shot proxies read)."""
        return self.head.final_expand(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        y = self.head.mix(y.mean((2, 3), keepdim=True)).flatten(1)
        return self.classifier(y)


def build_mbv3(
    space: MBV3Space, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3, seed: int = 0
) -> MBV3Net:
    """Build the network of ``arch`` (already validated) with weights drawn deterministically from ``seed``."""
    cfg = space.mbv3
    width, div = float(arch["width"]), cfg.channel_divisor

    def ch(c: int) -> int:
        return make_divisible(c * width, div)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stem_c, first_c = ch(cfg.stem_channels), ch(cfg.first_block_channels)
        stem = ConvBNAct(in_channels, stem_c, 3, 2, act="hswish")
        blocks: list[nn.Module] = [MBConv(stem_c, first_c, 3, 1, 1, act="relu", divisor=div)]
        cin = first_c
        for i, stage in enumerate(space.blocks(arch)):
            cout = ch(cfg.stage_channels[i])
            for j, (kernel, expand) in enumerate(stage):
                stride = cfg.stage_strides[i] if j == 0 else 1
                blocks.append(
                    MBConv(cin, cout, kernel, expand, stride, cfg.stage_activations[i], cfg.stage_se[i], div)
                )
                cin = cout
        final_c, feat_c = ch(cfg.final_expand_channels), ch(cfg.feature_channels)
        head = nn.Module()
        head.final_expand = ConvBNAct(cin, final_c, 1, act="hswish")
        head.mix = nn.Sequential(nn.Conv2d(final_c, feat_c, 1, bias=False), nn.Hardswish())
        classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(feat_c, num_classes))
        model = MBV3Net(stem, nn.Sequential(*blocks), head, classifier)
        init_weights(model)
    return model
