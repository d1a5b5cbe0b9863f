"""The over-parameterised MobileNetV3 network of ProxylessNAS for an :class:`~edgenas.spaces.mbv3.MBV3Space`.

Cai et al., "ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware" (ICLR 2019).
Every searchable block slot of the space is a :class:`~edgenas.supernets.mixed.MixedOp` over the
candidate MBConvs (kernel x expand ratio, the very :class:`~edgenas.models.blocks.MBConv` the builder
uses) plus, on the slots a stage may drop (beyond the smallest depth), the zero op. The stem, the fixed
first block and the head are those of :func:`edgenas.models.mbv3.build_mbv3`, built by it. The search
runs at one resolution and width multiplier (both are part of the derived architecture).

Supernet contract: :meth:`ProxylessSupernet.set_active` (an architecture of the space), ``forward``,
:meth:`ProxylessSupernet.extract` (the standalone ``space.build(arch)`` network with the supernet's
weights copied). A stage whose zero op sits between two blocks is compacted when deriving: every
droppable slot has stride 1 and equal in/out channels, so the network is the same function.

Weight sharing (``sharing="nested"``, off by default). ProxylessNAS gives every candidate its own weights,
so a sampled-path weight step trains only ``1/N`` of each block's weights: at CPU budgets (about a thousand
steps) the over-parameterised network barely learns (docs/gradient_nas.md measures it) and ``alpha`` gets
no accuracy signal. With ``nested`` the candidates of a slot are views of one elastic block
(:class:`~edgenas.supernets.ofa.DynamicMBConv`, the largest kernel and expand ratio): a smaller kernel is
the transformed centre of the larger one and a smaller expand ratio uses the first hidden channels, the
super-kernel idea of Stamoulis et al., "Single-Path NAS" (ECML-PKDD 2019) with Once-for-All's kernel
transformation (Cai et al., ICLR 2020). Every step then trains the weights every candidate uses; paths are
still binarized (one computed per block), ``alpha`` and the two-path estimator are unchanged, and
:meth:`ProxylessSupernet.extract` copies the active slices into the standalone network.

The search loop lives in :mod:`edgenas.supernets.gradient_search`; :func:`proxyless_search` runs it
with binarized paths (weights and ``alpha`` updated alternately on train / validation splits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from edgenas.errors import EdgenasError, unknown_name
from edgenas.models.blocks import MBConv, init_weights, zero_last_gamma
from edgenas.models.mbv3 import MBV3Net, build_mbv3
from edgenas.spaces.mbv3 import MBV3Space
from edgenas.supernets.mixed import MixedOp, ZeroOp, weights_without

SHARING = ("none", "nested")


def default_candidates(space: MBV3Space) -> list[tuple[int, int]]:
    """Every (kernel, expand) pair of the space, kernel-major: ``k3e3, k3e4, ..., k7e6``."""
    return [(k, e) for k in space.mbv3.kernels for e in space.mbv3.expands]


def default_width(space: MBV3Space) -> float:
    return 1.0 if 1.0 in space.mbv3.widths else float(space.mbv3.widths[0])


class SharedCandidate(nn.Module):
    """One (kernel, expand) candidate of a slot whose candidates share one elastic block (``nested``).

    It owns no parameters: the block is held by reference (the supernet registers it once, in
    ``shared_blocks``) and set to this candidate's kernel and expand ratio before each call.
    """

    def __init__(self, block: nn.Module, kernel: int, expand: int, cout: int) -> None:
        super().__init__()
        self.kernel, self.expand_ratio, self.cout = kernel, expand, cout
        self._block = [block]  # a list, so that nn.Module does not register the shared block here

    @property
    def block(self) -> nn.Module:
        return self._block[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.block.set_active(self.kernel, self.expand_ratio, self.cout)
        return self.block(x)


class ProxylessSupernet(MBV3Net):
    """Stem, first block, one :class:`MixedOp` per block slot, head (see the module docstring)."""

    def __init__(
        self,
        space: MBV3Space,
        num_classes: int,
        in_channels: int = 3,
        resolution: int | None = None,
        width: float | None = None,
        candidates: Sequence[tuple[int, int]] | None = None,
        mode: str = "binary",
        seed: int = 0,
        sharing: str = "none",
        zero_gamma: bool = False,
    ) -> None:
        if sharing not in SHARING:
            raise unknown_name("weight sharing", sharing, SHARING)
        if not isinstance(space, MBV3Space):
            raise EdgenasError(f"ProxylessNAS supernets are built for MBV3-style spaces; '{space.name}' is not one")
        cfg = space.mbv3
        resolution = int(resolution if resolution is not None else space.default_resolution)
        width = float(width if width is not None else default_width(space))
        if resolution not in cfg.resolutions:
            raise EdgenasError(f"--resolution {resolution} not in space '{space.name}' ({list(cfg.resolutions)})")
        if width not in cfg.widths:
            raise EdgenasError(f"--width {width} not in space '{space.name}' ({list(cfg.widths)})")
        candidates = [tuple(c) for c in (candidates or default_candidates(space))]
        for k, e in candidates:
            if k not in cfg.kernels or e not in cfg.expands:
                raise EdgenasError(f"candidate kernel {k} expand {e} is not in space '{space.name}' "
                                   f"(kernels {list(cfg.kernels)}, expands {list(cfg.expands)})")
        depths = sorted(cfg.depths)
        if depths != list(range(depths[0], depths[-1] + 1)):
            raise EdgenasError(f"the zero op needs contiguous stage depths; space '{space.name}' has {depths}")
        # The skeleton (stem, first block, head) comes from the builder itself: the deepest network.
        deepest: dict[str, Any] = {"resolution": resolution, "width": width}
        for i in range(1, cfg.num_stages + 1):
            deepest[f"s{i}.depth"] = cfg.max_depth
            for j in range(1, cfg.max_depth + 1):
                deepest[f"s{i}.b{j}.kernel"], deepest[f"s{i}.b{j}.expand"] = candidates[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ref = build_mbv3(space, space.validate(deepest), num_classes, in_channels, seed)
            blocks: list[nn.Module] = [ref.blocks[0]]
            shared: list[nn.Module] = []
            zero_slots: list[bool] = []
            slot = 1
            for i in range(cfg.num_stages):
                for j in range(cfg.max_depth):
                    tmpl = ref.blocks[slot]
                    if sharing == "nested":
                        from edgenas.supernets.ofa import DynamicMBConv

                        block = DynamicMBConv(tmpl.cin, tmpl.cout, tuple(sorted({k for k, _ in candidates})),
                                              tuple(sorted({e for _, e in candidates})), tmpl.stride,
                                              cfg.stage_activations[i], cfg.stage_se[i], cfg.channel_divisor)
                        shared.append(block)
                        ops: list[nn.Module] = [SharedCandidate(block, k, e, tmpl.cout) for k, e in candidates]
                    else:
                        ops = [
                            MBConv(tmpl.cin, tmpl.cout, k, e, tmpl.stride, cfg.stage_activations[i],
                                   cfg.stage_se[i], cfg.channel_divisor)
                            for k, e in candidates
                        ]
                    names = [f"k{k}e{e}" for k, e in candidates]
                    droppable = j + 1 > depths[0]
                    if droppable:
                        ops.append(ZeroOp())
                        names.append("zero")
                    zero_slots.append(droppable)
                    blocks.append(MixedOp(ops, names, mode))
                    slot += 1
            super().__init__(ref.stem, nn.Sequential(*blocks), ref.head, ref.classifier)
            self.shared_blocks = nn.ModuleList(shared)
            init_weights(self)
            if zero_gamma:  # every residual candidate starts as the identity (edgenas.models.blocks)
                zero_last_gamma(self)
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.resolution, self.width, self.seed = resolution, width, seed
        self.candidates = candidates
        self.zero_slots = zero_slots
        self.mode = mode
        self.sharing = sharing

    # ------------------------------------------------------------------ views
    @property
    def mixed(self) -> list[MixedOp]:
        return [m for m in self.blocks if isinstance(m, MixedOp)]

    def slot_names(self) -> list[str]:
        cfg = self.space.mbv3
        return [f"s{i}.b{j}" for i in range(1, cfg.num_stages + 1) for j in range(1, cfg.max_depth + 1)]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [m.alpha for m in self.mixed]

    def weight_parameters(self) -> list[nn.Parameter]:
        return weights_without(self, self.arch_parameters())

    def probs(self) -> list[torch.Tensor]:
        return [m.probs() for m in self.mixed]

    # ------------------------------------------------------------- path state
    def sample_paths(self, gen: torch.Generator) -> list[int]:
        return [m.sample_path(gen) for m in self.mixed]

    def sample_pairs(self, gen: torch.Generator) -> None:
        for m in self.mixed:
            m.sample_pair(gen)

    def relax(self) -> None:
        for m in self.mixed:
            m.relax()

    def fix(self, choice: Sequence[int]) -> None:
        for m, c in zip(self.mixed, choice, strict=True):
            m.fix(c)

    def prepare(self, step: str, gen: torch.Generator) -> None:
        """Set the paths of a ``weight`` or ``arch`` step: binarized (one sampled path / a sampled pair)
        or, in ``darts`` mode, every path."""
        if self.mode == "darts":
            self.relax()
        elif step == "weight":
            self.sample_paths(gen)
        else:
            self.sample_pairs(gen)

    def before_arch_update(self) -> None:
        for m in self.mixed:
            m.remember_pair_alpha()

    def after_arch_update(self) -> None:
        for m in self.mixed:
            m.rescale()

    def block_names(self) -> list[str]:
        return self.slot_names()

    def candidate_names(self) -> list[list[str]]:
        return [list(m.names) for m in self.mixed]

    def argmax_choice(self) -> list[int]:
        return [int(m.alpha.detach().argmax()) for m in self.mixed]

    # --------------------------------------------------------- arch <-> choice
    def arch_of(self, choice: Sequence[int]) -> dict[str, Any]:
        """The space's architecture for one candidate index per slot (zero ops compacted away)."""
        cfg = self.space.mbv3
        arch: dict[str, Any] = {"resolution": self.resolution, "width": self.width}
        it = iter(choice)
        for i in range(1, cfg.num_stages + 1):
            kept = []
            for _ in range(cfg.max_depth):
                c = next(it)
                if c < len(self.candidates):
                    kept.append(self.candidates[c])
            arch[f"s{i}.depth"] = len(kept)
            for j in range(1, cfg.max_depth + 1):
                k, e = kept[j - 1] if j <= len(kept) else (cfg.kernels[0], cfg.expands[0])
                arch[f"s{i}.b{j}.kernel"], arch[f"s{i}.b{j}.expand"] = k, e
        return self.space.validate(arch)

    def choice_of(self, arch: Mapping[str, Any]) -> list[int]:
        """One candidate index per slot for ``arch`` (a stage's missing blocks take the zero op)."""
        arch = self.space.validate(arch)
        if arch["resolution"] != self.resolution or float(arch["width"]) != self.width:
            raise EdgenasError(
                f"this supernet was built for resolution {self.resolution} and width {self.width}; the "
                f"architecture has {arch['resolution']} and {arch['width']}"
            )
        cfg, choice = self.space.mbv3, []
        for i in range(1, cfg.num_stages + 1):
            for j in range(1, cfg.max_depth + 1):
                if j > arch[f"s{i}.depth"]:
                    choice.append(len(self.candidates))  # the zero op (validate guarantees the slot has one)
                    continue
                ke = (arch[f"s{i}.b{j}.kernel"], arch[f"s{i}.b{j}.expand"])
                if ke not in self.candidates:
                    raise EdgenasError(f"stage {i} block {j}: kernel {ke[0]} expand {ke[1]} is not a candidate "
                                       f"of this supernet ({', '.join(f'k{k}e{e}' for k, e in self.candidates)})")
                choice.append(self.candidates.index(ke))
        return choice

    # ------------------------------------------------------------------ contract
    def set_active(self, arch: Mapping[str, Any]) -> None:
        """Compute only the paths of ``arch``."""
        self.fix(self.choice_of(arch))

    def extract(self, arch: Mapping[str, Any]) -> MBV3Net:
        """``space.build(arch)`` with this supernet's weights (and BN statistics) copied in."""
        arch = self.space.validate(arch)
        choice = self.choice_of(arch)
        net = self.space.build(arch, self.num_classes, self.in_channels, seed=self.seed)
        src = self.state_dict()
        dst: dict[str, torch.Tensor] = {}
        for key in net.state_dict():
            if not key.startswith("blocks.") or key.startswith("blocks.0."):
                dst[key] = src[key]
        shared: list[tuple[SharedCandidate, int]] = []
        b = 1
        for slot, c in enumerate(choice):
            if c == len(self.candidates):
                continue
            candidate = self.mixed[slot].candidates[c]
            if isinstance(candidate, SharedCandidate):
                shared.append((candidate, b))
            else:
                prefix = f"blocks.{slot + 1}.candidates.{c}."
                for key, value in src.items():
                    if key.startswith(prefix):
                        dst[f"blocks.{b}.{key[len(prefix):]}"] = value
            b += 1
        missing = net.load_state_dict(dst, strict=not shared).missing_keys
        filled = tuple(f"blocks.{b}." for _, b in shared)
        if any(not key.startswith(filled) for key in missing):
            raise RuntimeError(f"extract left weights uncopied: {[k for k in missing if not k.startswith(filled)]}")
        for candidate, b in shared:  # the active slices of the shared block
            candidate.block.set_active(candidate.kernel, candidate.expand_ratio, candidate.cout)
            candidate.block.copy_to(net.blocks[b])
        return net.eval()


def proxyless_search(config: Any, progress: Any = None, resume: bool = False, log: Any = None) -> Any:
    """Run a ProxylessNAS search (binarized paths) from a
    :class:`~edgenas.supernets.gradient_search.GradientSearchConfig`; see
    :func:`edgenas.supernets.gradient_search.run_search`."""
    from edgenas.supernets.gradient_search import run_search

    config.method = "proxyless"
    return run_search(config, progress, resume, log)
