"""Weight inheritance by function-preserving transformations (Net2Net) in the MobileNetV3 space.

Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer" (ICLR 2016): a trained
network is turned into a larger one that computes the same function, which then trains on from there
instead of from random weights; EAS (Cai et al., AAAI 2018) and network-morphism search build on it. For a
child architecture that is at least as large as a trained parent in every block (same resolution and
width; each kept block's kernel and expand ratio no smaller; each stage at least as deep):

* **wider** (Net2WiderNet), a larger expand ratio: the new hidden channels of an MBConv copy randomly chosen
  old ones (expand conv rows, batch-norm entries, depthwise filters; squeeze-excite's hidden units the same
  way), and every weight that reads a copied channel (project conv, SE reduce) is divided by the number of
  copies, so the sums it computes are unchanged;
* **larger kernel**: the depthwise filter is zero-padded around its centre (same padding, same output);
* **deeper** (Net2DeeperNet): an added block is a residual MBConv (stride 1, same channels) whose project
  batch norm has zero scale and shift, so it adds nothing and the block is the identity; its other weights
  are freshly initialised, and training grows it from zero (the residual form of Net2Net's identity layer).

Exact in eval mode and in training mode (copied channels have copied batch statistics), to float
rounding; with ``noise`` > 0 the copied expand-conv rows get Gaussian noise of that relative size to break
the copies' symmetry, as Net2Net suggests, at the price of exactness.

:class:`Net2NetEstimator` (``--estimator net2net``) uses it as an accuracy estimator: it keeps the trained
weights of every architecture it has evaluated, starts each new one from the largest of them that the
new one dominates (or from the space's smallest architecture at that resolution and width, trained first
with the same recipe), and trains it for the recipe's epochs. An accuracy therefore depends on what was
evaluated before (as in EAS); each Ray worker keeps its own pool. The pool holds at most ``max_pool`` trained
networks in memory: past that the least accurate one that is not a root is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from edgenas.data import Dataset
from edgenas.errors import EdgenasError
from edgenas.evaluators import Evaluator
from edgenas.models.blocks import MBConv, zero_last_gamma
from edgenas.spaces.base import SearchSpace

SYMMETRY_NOISE = 0.01  # relative noise on copied channels when the estimator widens a block


def _mbv3(space: SearchSpace) -> Any:
    from edgenas.spaces.mbv3 import MBV3Space

    if not isinstance(space, MBV3Space):
        raise EdgenasError(f"net2net weight inheritance works on the MobileNetV3 spaces (mbv3, mbv3-tiny), not "
                           f"'{space.name}'; use --estimator train")
    return space


def dominates(space: SearchSpace, child: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    """Whether ``child`` can inherit ``parent``'s function: the same resolution and width, every stage at
    least as deep, every kept block's kernel and expand ratio at least as large."""
    space = _mbv3(space)
    c, p = space.validate(child), space.validate(parent)
    if c["resolution"] != p["resolution"] or c["width"] != p["width"]:
        return False
    for c_stage, p_stage in zip(space.blocks(c), space.blocks(p), strict=True):
        if len(c_stage) < len(p_stage):
            return False
        if any(ck < pk or ce < pe for (ck, ce), (pk, pe) in zip(c_stage, p_stage, strict=False)):
            return False
    return True


def _copy_map(old: int, new: int, rng: np.random.Generator) -> torch.Tensor:
    """Net2WiderNet's mapping: new channel ``i`` copies old channel ``g[i]`` (the first ``old`` keep theirs)."""
    extra = rng.integers(0, old, size=new - old)
    return torch.as_tensor(np.concatenate([np.arange(old), extra]), dtype=torch.long)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, g: torch.Tensor | None = None) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(src, name)
        getattr(dst, name).copy_(value if g is None else value[g])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def widen_block(child: MBConv, parent: MBConv, rng: np.random.Generator, noise: float = 0.0) -> None:
    """Set ``child``'s weights so that it computes ``parent``'s function (same in/out channels and stride;
    hidden channels and kernel at least as large)."""
    if (child.cin, child.cout, child.stride) != (parent.cin, parent.cout, parent.stride):
        raise ValueError("widen_block needs blocks with the same input/output channels and stride")
    if child.hidden < parent.hidden or child.kernel < parent.kernel or (parent.expand is None) != (
            child.expand is None):
        raise ValueError("the child block must be at least as wide and its kernel at least as large")
    g = _copy_map(parent.hidden, child.hidden, rng)
    copies = torch.bincount(g, minlength=parent.hidden).to(torch.float32)
    if parent.expand is not None:
        w = parent.expand[0].weight[g].clone()
        if noise > 0 and child.hidden > parent.hidden:
            fresh = w[parent.hidden:]
            fresh += noise * fresh.std() * torch.randn(fresh.shape, generator=_torch_gen(rng))
        child.expand[0].weight.copy_(w)
        _copy_bn(child.expand[1], parent.expand[1], g)
    pad = (child.kernel - parent.kernel) // 2
    dw = parent.depthwise[0].weight[g]
    child.depthwise[0].weight.copy_(nn.functional.pad(dw, (pad, pad, pad, pad)))
    _copy_bn(child.depthwise[1], parent.depthwise[1], g)
    if parent.se is not None:
        r_old, r_new = parent.se.reduce.out_channels, child.se.reduce.out_channels
        gs = _copy_map(r_old, r_new, rng)
        se_copies = torch.bincount(gs, minlength=r_old).to(torch.float32)
        child.se.reduce.weight.copy_(parent.se.reduce.weight[gs][:, g] / copies[g].view(1, -1, 1, 1))
        child.se.reduce.bias.copy_(parent.se.reduce.bias[gs])
        child.se.expand.weight.copy_(parent.se.expand.weight[g][:, gs] / se_copies[gs].view(1, -1, 1, 1))
        child.se.expand.bias.copy_(parent.se.expand.bias[g])
    child.project[0].weight.copy_(parent.project[0].weight[:, g] / copies[g].view(1, -1, 1, 1))
    _copy_bn(child.project[1], parent.project[1])


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))


@torch.no_grad()
def identity_block(block: MBConv) -> None:
    """Net2DeeperNet for a residual block: zero scale and shift on its project batch norm."""
    if not block.residual:
        raise ValueError("only a residual block (stride 1, same channels) can be made the identity")
    block.project[1].weight.zero_()
    block.project[1].bias.zero_()


def inherit(space: SearchSpace, parent_arch: Mapping[str, Any], parent: nn.Module, child_arch: Mapping[str, Any],
            num_classes: int, in_channels: int = 3, seed: int = 0, noise: float = 0.0) -> nn.Module:
    """The network of ``child_arch`` computing ``parent``'s function (``child_arch`` must dominate
    ``parent_arch``); new blocks are identities whose other weights come from ``seed``."""
    space = _mbv3(space)
    if not dominates(space, child_arch, parent_arch):
        raise EdgenasError("net2net: the child architecture must have the parent's resolution and width and be "
                           "at least as deep, wide and large-kerneled in every block")
    child = space.build(child_arch, num_classes, in_channels, seed=seed)
    rng = np.random.default_rng(seed)
    p_state = {k: v for k, v in parent.state_dict().items() if not k.startswith("blocks.")}
    child.load_state_dict(p_state, strict=False)  # stem, head and classifier have the same shapes
    p_blocks, c_blocks = list(parent.blocks), list(child.blocks)
    with torch.no_grad():
        for dst, src in zip(c_blocks[0].state_dict().values(), p_blocks[0].state_dict().values(), strict=True):
            dst.copy_(src)  # the fixed first block
    p_at, c_at = 1, 1
    for p_stage, c_stage in zip(space.blocks(parent_arch), space.blocks(child_arch), strict=True):
        for j in range(len(c_stage)):
            if j < len(p_stage):
                widen_block(c_blocks[c_at + j], p_blocks[p_at + j], rng, noise)
            else:
                identity_block(c_blocks[c_at + j])
        p_at, c_at = p_at + len(p_stage), c_at + len(c_stage)
    return child


def _size(space: SearchSpace, arch: Mapping[str, Any]) -> int:
    return sum(k * k + e for stage in space.blocks(arch) for k, e in stage)


class Net2NetEstimator(Evaluator):
    """Validation accuracy (%) after training from inherited weights (see the module docstring)."""

    name, unit, direction, cheap = "accuracy", "%", "maximize", False

    def __init__(self, space: SearchSpace, data: Dataset, recipe: Any = None, seed: int = 0,
                 weights_dir: str | os.PathLike[str] | None = None, noise: float = SYMMETRY_NOISE,
                 max_pool: int = 64) -> None:
        from edgenas.estimators.train import TrainRecipe

        self.space, self.data, self.seed, self.weights_dir, self.noise = _mbv3(space), data, seed, weights_dir, noise
        self.recipe = recipe or TrainRecipe()
        self.max_pool = max_pool
        self.accuracy: dict[str, float] = {}
        self.pool: dict[str, tuple[dict[str, Any], dict[str, torch.Tensor]]] = {}  # key -> (arch, weights)
        self.parents: dict[str, str | None] = {}  # key -> the key it inherited from (None: from scratch)

    def _train(self, model: nn.Module, arch: Mapping[str, Any]) -> float:
        from edgenas.estimators.train import evaluate_accuracy, train_model

        x_train, x_val = self.data.at_resolution(self.space.resolution(arch))
        train_model(model, x_train, self.data.y_train, self.recipe, self.seed)
        key = self.space.key(arch)
        self.pool[key] = (dict(arch), {k: v.detach().clone() for k, v in model.state_dict().items()})
        self.accuracy[key] = evaluate_accuracy(model, x_val, self.data.y_val)
        droppable = [k for k in self.pool if self.parents.get(k) is not None and k != key]
        if len(self.pool) > self.max_pool and droppable:
            del self.pool[min(droppable, key=lambda k: self.accuracy[k])]
        return self.accuracy[key]

    def _parent(self, arch: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        own = self.space.key(arch)
        candidates = [(k, a) for k, (a, _) in self.pool.items() if k != own and dominates(self.space, arch, a)]
        if not candidates:  # the root: the smallest architecture at this resolution and width, trained first
            root = {**self.space.extreme(smallest=True), "resolution": arch["resolution"], "width": arch["width"]}
            root = self.space.validate(root)
            key = self.space.key(root)
            if key not in self.pool:
                self.parents[key] = None
                model = self.space.build(root, self.data.num_classes, self.data.in_channels, self.seed)
                if self.recipe.zero_last_gamma:  # the root alone is trained from scratch
                    zero_last_gamma(model)
                self._train(model, root)
            return key, root
        return max(candidates, key=lambda c: (_size(self.space, c[1]), c[0]))

    def __call__(self, arch: Mapping[str, Any]) -> float:
        arch = self.space.validate(arch)
        key = self.space.key(arch)
        parent_key, parent_arch = self._parent(arch)
        if parent_key == key:  # the root itself: already trained from scratch, its weights in the pool
            accuracy = self.accuracy[key]
        else:
            parent = self.space.build(parent_arch, self.data.num_classes, self.data.in_channels, self.seed)
            parent.load_state_dict(self.pool[parent_key][1])
            model = inherit(self.space, parent_arch, parent, arch, self.data.num_classes, self.data.in_channels,
                            self.seed, self.noise)
            self.parents[key] = parent_key
            accuracy = self._train(model, arch)
        if self.weights_dir is not None:
            from edgenas.estimators.train import save_weights, weights_file

            save_weights(self.pool[key][1], weights_file(self.weights_dir, self.space, arch))
        return accuracy

    def describe(self) -> str:
        return (f"accuracy [%] after {self.recipe.epochs} epoch(s) of training from Net2Net-inherited weights on "
                f"{self.data.name}")
