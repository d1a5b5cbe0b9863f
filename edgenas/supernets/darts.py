"""DARTS: differentiable architecture search by continuous relaxation (Liu et al., ICLR 2019).

Every edge (or block) computes all of its candidate operations and outputs their sum weighted by
``softmax(alpha)``; weights and ``alpha`` are trained alternately on train / validation splits
(first-order approximation: ``alpha``'s gradient is taken at the current weights, section 2.3 of the
paper with ``xi = 0``). The discrete architecture is the per-edge argmax; on NB201 the ``none``
operation is left out of the argmax, as DARTS does for its zero op (section 2.4).

Two over-parameterised networks:

* :class:`DartsNB201Net`: the NAS-Bench-201 network (:mod:`edgenas.models.nb201`) with every cell edge a
  relaxed mixed op over the five NB201 operations; one ``alpha`` per edge shared by all cells, as in
  NB201's own DARTS baseline. Width and cells per stage are parameters (small defaults for the CPU).
* the MBV3 supernet of ProxylessNAS in ``darts`` mode (:class:`~edgenas.supernets.proxyless.ProxylessSupernet`
  with ``mode="darts"``): the same mixed ops, every path computed -- the memory baseline that
  binarized paths improve on.

:func:`darts_search` runs either through :mod:`edgenas.supernets.gradient_search`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.models.nb201 import ResidualReduction, make_op
from edgenas.spaces.nb201 import EDGE_NAMES, EDGES, OPS
from edgenas.supernets.mixed import MixedOp, weights_without


class _Zero(nn.Module):
    """NB201's ``none``: zeros of the input's shape (its weight in the relaxed sum still gets a gradient
    through the softmax)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


class DartsCell(nn.Module):
    """An NB201 cell whose 6 edges are relaxed mixed ops; ``alphas`` (6 parameters) are shared."""

    def __init__(self, channels: int, edges: Sequence[MixedOp]) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            MixedOp([make_op(op, channels) or _Zero() for op in OPS], OPS, mode="darts") for _ in EDGES
        )
        for mine, shared in zip(self.edges, edges, strict=True):
            mine.alpha = shared.alpha  # one alpha per edge position, shared by every cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, 4):
            nodes.append(sum(self.edges[k](nodes[i]) for k, (i, jj) in enumerate(EDGES) if jj == j))
        return nodes[-1]


class DartsNB201Net(nn.Module):
    """The NB201 network with relaxed cells (see the module docstring)."""

    def __init__(self, space: Any, num_classes: int, in_channels: int = 3, channels: int = 8,
                 cells_per_stage: int = 1, seed: int = 0) -> None:
        super().__init__()
        if list(space.names) != list(EDGE_NAMES):
            raise EdgenasError(f"DartsNB201Net needs the nb201 space; '{space.name}' is not it")
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.resolution, self.mode = 32, "darts"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.alphas = nn.ModuleList(MixedOp([nn.Identity()] * len(OPS), OPS, "darts") for _ in EDGES)
            c = channels
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
            layers: list[nn.Module] = []
            for stage, width in enumerate((c, 2 * c, 4 * c)):
                if stage > 0:
                    layers.append(ResidualReduction(width // 2, width))
                layers.extend(DartsCell(width, list(self.alphas)) for _ in range(cells_per_stage))
            self.cells = nn.Sequential(*layers)
            self.lastact = nn.Sequential(nn.BatchNorm2d(4 * c), nn.ReLU())
            self.classifier = nn.Linear(4 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.lastact(self.cells(self.stem(x))).mean((2, 3)))

    # ------------------------------------------------------------ gradient-search interface
    def arch_parameters(self) -> list[nn.Parameter]:
        return [m.alpha for m in self.alphas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return weights_without(self, self.arch_parameters())

    def probs(self) -> list[torch.Tensor]:
        return [m.probs() for m in self.alphas]

    def _edge_ops(self) -> list[MixedOp]:
        return [m for m in self.cells.modules() if isinstance(m, MixedOp)]

    def prepare(self, step: str, gen: torch.Generator) -> None:
        for m in self._edge_ops():
            m.relax()

    def fix(self, choice: Sequence[int]) -> None:
        ops = self._edge_ops()
        for i, m in enumerate(ops):
            m.fix(choice[i % len(EDGES)])

    def before_arch_update(self) -> None:
        pass

    def after_arch_update(self) -> None:
        pass

    def argmax_choice(self) -> list[int]:
        """Per edge, the most probable operation other than ``none``."""
        none = OPS.index("none")
        out = []
        for a in self.arch_parameters():
            a = a.detach().clone()
            a[none] = -float("inf")
            out.append(int(a.argmax()))
        return out

    def arch_of(self, choice: Sequence[int]) -> dict[str, Any]:
        return self.space.validate({n: OPS[c] for n, c in zip(EDGE_NAMES, choice, strict=True)})

    def block_names(self) -> list[str]:
        return list(EDGE_NAMES)

    def candidate_names(self) -> list[list[str]]:
        return [list(OPS) for _ in EDGES]


def darts_search(config: Any, progress: Any = None, resume: bool = False, log: Any = None) -> Any:
    """Run a first-order DARTS search (nb201 or an MBV3 space) from a
    :class:`~edgenas.supernets.gradient_search.GradientSearchConfig`."""
    from edgenas.supernets.gradient_search import run_search

    config.method = "darts"
    return run_search(config, progress, resume, log)
