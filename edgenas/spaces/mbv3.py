"""The Once-for-All / ProxylessNAS MobileNetV3 network-level search space.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment" (ICLR 2020) and
Cai et al., "ProxylessNAS" (ICLR 2019). A fixed stem (3x3 conv, stride 2) and a first MBConv (expand 1,
kernel 3) are followed by searchable stages; stage ``i`` has a depth ``d_i``; each of its first ``d_i``
blocks has a kernel size and an expand ratio. The input resolution and a width multiplier are searched
too. At full size (``mbv3``) the space is OFA's: 5 stages of up to 4 blocks (20 block slots), widths
24/40/80/112/160, kernels {3,5,7}, expand ratios {3,4,6}, depths {2,3,4}, resolutions 128..224.

Dimension names: ``resolution``, ``width``, ``s{i}.depth`` and ``s{i}.b{j}.kernel`` /
``s{i}.b{j}.expand`` (stages and blocks counted from 1). The space's ``config`` holds everything the
builder needs (:class:`MBV3Config`), so a supernet or checkpoint can say what it was built for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edgenas.errors import InvalidArchitecture
from edgenas.spaces.base import Arch, Dimension, SearchSpace


@dataclass(frozen=True)
class MBV3Config:
    """Everything that fixes an MBV3-style space: searchable choices and the fixed skeleton."""

    stage_channels: tuple[int, ...] = (24, 40, 80, 112, 160)
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stage_activations: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    stage_se: tuple[bool, ...] = (False, True, False, True, True)
    depths: tuple[int, ...] = (2, 3, 4)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    widths: tuple[float, ...] = (1.0, 1.2)
    stem_channels: int = 16
    first_block_channels: int = 16
    final_expand_channels: int = 960
    feature_channels: int = 1280
    num_classes: int = 1000
    dropout: float = 0.1
    channel_divisor: int = 8

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


OFA_CONFIG = MBV3Config()
TINY_CONFIG = MBV3Config(
    stage_channels=(16, 24, 32, 48, 64),
    resolutions=(16, 20, 24, 28, 32),
    widths=(0.75, 1.0),
    stem_channels=8,
    first_block_channels=8,
    final_expand_channels=128,
    feature_channels=256,
    num_classes=10,
    channel_divisor=4,
)


@dataclass
class MBV3Space(SearchSpace):
    """An MBV3-style space built from an :class:`MBV3Config` (see the module docstring)."""

    mbv3: MBV3Config = field(default_factory=MBV3Config)

    @classmethod
    def from_config(cls, name: str, cfg: MBV3Config, description: str = "") -> MBV3Space:
        dims = [
            Dimension("resolution", tuple(cfg.resolutions), "resolution"),
            Dimension("width", tuple(cfg.widths), "width multiplier"),
        ]
        for i in range(1, cfg.num_stages + 1):
            dims.append(Dimension(f"s{i}.depth", tuple(cfg.depths), f"stage {i} depth"))
            for j in range(1, cfg.max_depth + 1):
                dims.append(Dimension(f"s{i}.b{j}.kernel", tuple(cfg.kernels), f"stage {i} block {j} kernel"))
                dims.append(Dimension(f"s{i}.b{j}.expand", tuple(cfg.expands), f"stage {i} block {j} expand"))

        def counter() -> int:
            per_block = len(cfg.kernels) * len(cfg.expands)
            per_stage = sum(per_block**d for d in cfg.depths)
            return per_stage**cfg.num_stages * len(cfg.resolutions) * len(cfg.widths)

        return cls(
            name=name,
            dimensions=dims,
            builder="edgenas.models.mbv3:build_mbv3",
            is_active=_block_is_active,
            default_resolution=max(cfg.resolutions),
            description=description,
            config=cfg.to_json(),
            counter=counter,
            mbv3=cfg,
        )

    # --------------------------------------------------------- structured view
    def blocks(self, arch: Mapping[str, Any]) -> list[list[tuple[int, int]]]:
        """Per stage, the (kernel, expand) of each active block."""
        canon = self.validate(arch)
        return [
            [
                (canon[f"s{i}.b{j}.kernel"], canon[f"s{i}.b{j}.expand"])
                for j in range(1, canon[f"s{i}.depth"] + 1)
            ]
            for i in range(1, self.mbv3.num_stages + 1)
        ]

    # ------------------------------------------------------------ OFA format
    def to_ofa(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """OFA's subnet dict ``{ks, e, d, r}`` (20 slots; inactive slots carry the canonical choice).

        The width multiplier is not part of OFA's dict (OFA trains one supernet per width); it is
        returned under ``w``.
        """
        canon = self.validate(arch)
        n, m = self.mbv3.num_stages, self.mbv3.max_depth
        return {
            "ks": [canon[f"s{i}.b{j}.kernel"] for i in range(1, n + 1) for j in range(1, m + 1)],
            "e": [canon[f"s{i}.b{j}.expand"] for i in range(1, n + 1) for j in range(1, m + 1)],
            "d": [canon[f"s{i}.depth"] for i in range(1, n + 1)],
            "r": canon["resolution"],
            "w": canon["width"],
        }

    def from_ofa(self, ofa: Mapping[str, Any]) -> Arch:
        """Inverse of :meth:`to_ofa`; ``r`` may be a list (OFA writes ``[224]``) and ``w`` may be absent."""
        n, m = self.mbv3.num_stages, self.mbv3.max_depth
        for key in ("ks", "e", "d"):
            if key not in ofa:
                raise InvalidArchitecture(f"an OFA subnet dict needs '{key}' (has {sorted(ofa)})")
        ks, e, d = list(ofa["ks"]), list(ofa["e"]), list(ofa["d"])
        if len(ks) != n * m or len(e) != n * m or len(d) != n:
            raise InvalidArchitecture(
                f"an OFA dict for space '{self.name}' has {n * m} ks/e entries and {n} depths; "
                f"got {len(ks)}, {len(e)}, {len(d)}"
            )
        r = ofa.get("r", self.default_resolution)
        if isinstance(r, list | tuple):
            r = r[0]
        default_width = 1.0 if 1.0 in self.mbv3.widths else self.mbv3.widths[0]
        arch: Arch = {"resolution": int(r), "width": ofa.get("w", default_width)}
        for i in range(1, n + 1):
            arch[f"s{i}.depth"] = int(d[i - 1])
            for j in range(1, m + 1):
                arch[f"s{i}.b{j}.kernel"] = int(ks[(i - 1) * m + j - 1])
                arch[f"s{i}.b{j}.expand"] = int(e[(i - 1) * m + j - 1])
        return self.validate(arch)


def _block_is_active(name: str, partial: Mapping[str, Any]) -> bool:
    """Block ``j`` of stage ``i`` matters only when the stage's depth is at least ``j``."""
    if ".b" not in name:
        return True
    stage, block = name.split(".")[:2]
    depth = partial.get(f"{stage}.depth")
    return depth is not None and int(block[1:]) <= depth


def mbv3_space() -> MBV3Space:
    """The full OFA MobileNetV3 space (ImageNet-size: 1000 classes, 128-224 px)."""
    return MBV3Space.from_config("mbv3", OFA_CONFIG, "OFA/ProxylessNAS MobileNetV3 space, full size")


def mbv3_tiny_space() -> MBV3Space:
    """The same space with small widths and 16-32 px inputs, for CPU runs."""
    return MBV3Space.from_config("mbv3-tiny", TINY_CONFIG, "MobileNetV3 space at small widths, 16-32 px")
