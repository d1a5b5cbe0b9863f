"""Differentiable expected latency and the two latency losses of ProxylessNAS.

Cai et al., "ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware" (ICLR 2019),
section 3.3: with a latency look-up table, the expected latency of the over-parameterised network is
linear in the path probabilities,

    E[lat] = fixed + sum over blocks b of sum over candidates j of p_bj * lat(op_bj),

so it is differentiable in the architecture parameters. Two published ways of adding it to the loss:

* **additive** (the paper's eq. 5): ``CE + lambda * E[lat] / target``;
* **multiplicative** (the released code, after MnasNet): ``CE * (log E[lat] / log target) ** beta``.
  Both logs must be positive, so this form works in microseconds (see :func:`latency_loss`).

A :class:`BlockLatency` holds the per-block candidate latencies of one network skeleton (space,
resolution, width). It is built from a layer-wise latency table (:mod:`edgenas.hardware.lut`; the
table's calibration ``a * sum + b * layers + c`` is linear per layer, so a block costs ``a * lat + b``
and the fixed part takes ``c``) or given directly as numbers (a per-op table of your own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgenas.errors import EdgenasError, unknown_name

LOSS_FORMS = ("additive", "multiplicative")


@dataclass
class BlockLatency:
    """Latency (ms) of the fixed layers and of every candidate of every searchable block.

    ``slots[b][j]`` is the latency of candidate ``j`` of block ``b`` (0.0 for a zero op); ``names`` say
    which block and candidate each number is, for error messages and reports.
    """

    fixed_ms: float
    slots: list[list[float]]
    names: list[str]
    candidate_names: list[list[str]]
    source: str = ""

    def __post_init__(self) -> None:
        for name, row in zip(self.names, self.slots, strict=True):
            if not all(math.isfinite(v) for v in row):
                raise EdgenasError(f"latency of block {name} is not finite in {self.source or 'the table'}")
        self._tensors = [torch.tensor(row, dtype=torch.float64) for row in self.slots]

    def expected(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """E[lat] in ms for per-block probability vectors (differentiable in ``probs``)."""
        if len(probs) != len(self.slots):
            raise ValueError(f"{len(probs)} probability vectors for {len(self.slots)} blocks")
        total = torch.zeros((), dtype=torch.float64)
        for p, lat in zip(probs, self._tensors, strict=True):
            total = total + (p.to(torch.float64) * lat).sum()
        return (total + self.fixed_ms).to(torch.float32)

    def of_choice(self, choice: Sequence[int]) -> float:
        """Latency (ms) of one discrete choice (one candidate index per block)."""
        return self.fixed_ms + sum(row[c] for row, c in zip(self.slots, choice, strict=True))

    def min_ms(self) -> float:
        return self.fixed_ms + sum(min(row) for row in self.slots)

    def max_ms(self) -> float:
        return self.fixed_ms + sum(max(row) for row in self.slots)

    def check_target(self, target_ms: float, where: str = "") -> None:
        """Refuse a latency target no network of this skeleton can meet."""
        if not (target_ms > 0 and math.isfinite(target_ms)):
            raise EdgenasError(f"--latency-ms must be a positive number of milliseconds, got {target_ms}")
        lo = self.min_ms()
        if target_ms < lo:
            raise EdgenasError(
                f"latency target {target_ms:g} ms is below the smallest reachable network{where} "
                f"({lo:.4g} ms on {self.source or 'the latency table'}); raise --latency-ms or lower --resolution"
            )

    @classmethod
    def from_lut(cls, model: Any, resolution: int, width: float, candidates: Sequence[tuple[int, int]],
                 zero_slots: Sequence[bool]) -> BlockLatency:
        """Per-block latencies of an MBV3 skeleton from a bound :class:`~edgenas.hardware.lut.LutModel`.

        ``candidates`` are the (kernel, expand) pairs every block offers, ``zero_slots[b]`` whether block
        ``b`` (stage-major order) also offers the zero op. A candidate the table lacks is an error naming
        its key.
        """
        layers = model.layers
        if resolution not in layers.resolutions:
            raise EdgenasError(f"resolution {resolution} not in the table's {list(layers.resolutions)}")
        if width not in layers.widths:
            raise EdgenasError(f"width {width} not in the table's {list(layers.widths)}")
        ri, wi = layers.resolutions.index(resolution), layers.widths.index(width)
        cal = model.table.calibration

        def lat(i: int) -> float:
            v = float(model.values[ri, i])
            if not math.isfinite(v):
                key = model.missing.get((ri, i), layers.layers[i].key)
                raise EdgenasError(
                    f"latency table {model.table.source or '(in memory)'} has no entry '{key}' "
                    f"(a candidate at resolution {resolution}, width {width}); it was built for "
                    f"{model.table.built_for()}"
                )
            return v

        fixed_ids = [int(i) for i in layers.fixed[ri, wi]]
        fixed = cal.a * sum(lat(i) for i in fixed_ids) + cal.b * len(fixed_ids) + cal.c
        slots, names, cnames = [], [], []
        b = 0
        for s in range(layers.num_stages):
            for j in range(layers.max_depth):
                row, cn = [], []
                for k, e in candidates:
                    ki, ei = layers.kernels.index(k), layers.expands.index(e)
                    row.append(cal.a * lat(int(layers.block[ri, wi, s, min(j, 1), ki, ei])) + cal.b)
                    cn.append(f"k{k}e{e}")
                if zero_slots[b]:
                    row.append(0.0)
                    cn.append("zero")
                slots.append(row)
                cnames.append(cn)
                names.append(f"s{s + 1}.b{j + 1}")
                b += 1
        return cls(float(fixed), slots, names, cnames, model.table.source)


def latency_loss(ce: torch.Tensor, expected_ms: torch.Tensor, target_ms: float, form: str = "additive",
                 lam: float = 0.1, beta: float = 0.6) -> torch.Tensor:
    """The ProxylessNAS loss with a latency term (see the module docstring).

    ``additive``: ``ce + lam * E / target``. ``multiplicative``: ``ce * (log E_us / log target_us) ** beta``
    with both latencies in microseconds, so that the logs are positive for any sub-second latency.
    """
    if form == "additive":
        return ce + lam * expected_ms / target_ms
    if form == "multiplicative":
        e_us, t_us = expected_ms * 1000.0, target_ms * 1000.0
        if t_us <= 1.0:
            raise EdgenasError(f"the multiplicative latency loss needs a target above 1 us, got {target_ms} ms")
        return ce * (torch.log(e_us) / math.log(t_us)) ** beta
    raise unknown_name("latency loss form", form, LOSS_FORMS)


def most_probable_under(log_probs: Sequence[np.ndarray], lat: BlockLatency, budget_ms: float,
                        resolution_ms: float | None = None, floor_ms: float | None = None) -> list[int] | None:
    """The choice maximising ``sum log p`` whose table latency is at most ``budget_ms`` (and, with
    ``floor_ms``, at least about that).

    A multiple-choice knapsack solved exactly by dynamic programming over latency in steps of
    ``resolution_ms`` (default: budget / 20000; each block's latency is rounded *up*, so the result never
    exceeds the budget, and the floor is raised by one step per block, so it is never undercut either).
    ``None`` if no choice fits.
    """
    room = budget_ms - lat.fixed_ms
    if room < 0:
        return None
    step = resolution_ms or max(budget_ms / 20000.0, 1e-9)
    cap = int(math.floor(room / step + 1e-9))
    neg = -np.inf
    best = np.full(cap + 1, neg)
    best[0] = 0.0
    back: list[np.ndarray] = []
    for lp, row in zip(log_probs, lat.slots, strict=True):
        cost = [int(math.ceil(max(v, 0.0) / step - 1e-9)) for v in row]
        new = np.full(cap + 1, neg)
        arg = np.full(cap + 1, -1, dtype=np.int64)
        for j, c in enumerate(cost):
            if c > cap:
                continue
            cand = np.full(cap + 1, neg)
            cand[c:] = best[: cap + 1 - c] + float(lp[j])
            better = cand > new
            new[better] = cand[better]
            arg[better] = j
        best = new
        back.append(arg)
    if floor_ms is not None:
        lo = int(math.ceil((floor_ms - lat.fixed_ms) / step)) + len(lat.slots)
        best[: max(0, min(lo, cap + 1))] = neg
    if not np.isfinite(best).any():
        return None
    pos = int(np.argmax(best))
    choice = []
    for arg, row in zip(reversed(back), reversed(lat.slots), strict=True):
        j = int(arg[pos])
        choice.append(j)
        pos -= int(math.ceil(max(row[j], 0.0) / step - 1e-9))
    return choice[::-1]
