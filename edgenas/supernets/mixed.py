"""Mixed operations: one block that holds every candidate operation, with architecture parameters.

Two ways of running a mixed op over candidates ``o_1..o_N`` with architecture parameters ``alpha``
(``p = softmax(alpha)``):

* **DARTS** (Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019): the continuous
  relaxation ``sum_j p_j * o_j(x)``; every candidate is computed and held for the backward pass, so
  memory grows with N.
* **Binarized paths** (Cai et al., "ProxylessNAS", ICLR 2019, section 3.2): binary gates ``g`` with
  one active path sampled from ``p``; only the active path is computed. For a *weight* step one path
  is sampled (memory independent of N). For an *architecture* step the **two-path estimator**: sample
  two candidates from ``p`` (without replacement), renormalise their probabilities, activate one of
  them, compute both outputs ``y = sum_{k in pair} g_k * o_k(x)`` (only the active one contributes a
  value), and map ``dL/dg`` to ``alpha`` by ``dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i)``
  over the pair (:class:`TwoPathGates`). After the optimiser's step, the pair's ``alpha`` are shifted by
  one constant so that the sum of their ``exp`` is unchanged (:meth:`MixedOp.rescale`): the
  probabilities of the paths that were not sampled stay as they were.

A mixed op's mode is an attribute of the instance (set by its supernet), never a process-wide switch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

MODES = ("binary", "darts")


class ZeroOp(nn.Module):
    """The "zero" candidate of a residual block: the block is skipped and its input passes unchanged
    (ProxylessNAS's zero operation on an inverted-residual block, which lets a stage get shallower)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TwoPathGates(torch.autograd.Function):
    """Binary gates over a sampled pair of paths; the backward is ProxylessNAS's two-path estimator.

    Forward: ``alpha`` (N,), ``pair`` (2,) long, ``active`` (0 or 1) -> gates (2,) with a 1 at the active
    position. Backward: ``grad_alpha[pair] = q * (G - sum(G * q))`` where ``G = dL/dgates`` and
    ``q = softmax(alpha[pair])`` (equal to ``sum_j G_j q_j (delta_ij - q_i)``); zero elsewhere.
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, pair: torch.Tensor, active: int) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(alpha, pair)
        gates = torch.zeros(2, dtype=alpha.dtype)
        gates[active] = 1.0
        return gates

    @staticmethod
    def backward(ctx, grad_gates: torch.Tensor):  # noqa: ANN001, ANN205
        alpha, pair = ctx.saved_tensors
        q = torch.softmax(alpha.detach()[pair], 0)
        grad = torch.zeros_like(alpha)
        grad[pair] = q * (grad_gates - (grad_gates * q).sum())
        return grad, None, None


class MixedOp(nn.Module):
    """Candidate operations of one block, their architecture parameters and the path state.

    ``mode`` is ``binary`` or ``darts``. Path state: :meth:`fix` (one path, e.g. a weight step or a
    derived architecture), :meth:`sample_pair` (an architecture step of the two-path estimator) or, in
    ``darts`` mode, :meth:`relax` (every path, weighted by ``softmax(alpha)``).
    """

    def __init__(self, candidates: Sequence[nn.Module], names: Sequence[str], mode: str = "binary") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mixed-op mode '{mode}'; valid: {', '.join(MODES)}")
        if len(candidates) != len(names) or not candidates:
            raise ValueError("a mixed op needs one name per candidate and at least one candidate")
        self.candidates = nn.ModuleList(candidates)
        self.names = list(names)
        self.alpha = nn.Parameter(torch.zeros(len(candidates)))
        self.mode = mode
        self.active: int | None = 0  # the single computed path (None while relaxed or paired)
        self.pair: tuple[int, int] | None = None
        self.pair_active = 0
        self._old_pair_alpha: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.candidates)

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)

    # ------------------------------------------------------------------ path state
    def fix(self, index: int) -> None:
        """Compute only candidate ``index`` (a weight step's sampled path, or a derived architecture)."""
        self.active, self.pair = int(index), None

    def relax(self) -> None:
        """DARTS: compute every candidate, weighted by ``softmax(alpha)``."""
        self.active, self.pair = None, None

    def sample_path(self, gen: torch.Generator) -> int:
        """Fix one path drawn from ``softmax(alpha)`` (a binarized weight step)."""
        with torch.no_grad():
            idx = int(torch.multinomial(self.probs(), 1, generator=gen))
        self.fix(idx)
        return idx

    def sample_pair(self, gen: torch.Generator) -> tuple[int, int]:
        """Draw two distinct paths from ``softmax(alpha)`` and the active one from their renormalised
        probabilities (an architecture step of the two-path estimator). With one candidate, it is fixed."""
        if len(self) == 1:
            self.fix(0)
            return (0, 0)
        with torch.no_grad():
            pair = torch.multinomial(self.probs(), 2, replacement=False, generator=gen)
            q = torch.softmax(self.alpha[pair], 0)
            self.pair_active = int(torch.multinomial(q, 1, generator=gen))
        self.active, self.pair = None, (int(pair[0]), int(pair[1]))
        return self.pair

    # -------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is not None:
            return self.candidates[self.active](x)
        if self.pair is not None:
            pair = torch.tensor(self.pair)
            gates = TwoPathGates.apply(self.alpha, pair, self.pair_active)
            return sum(gates[k] * self.candidates[self.pair[k]](x) for k in range(2))
        if self.mode != "darts":
            raise RuntimeError("a binary mixed op computes one path or a sampled pair; call fix or sample_pair")
        w = self.probs()
        return sum(w[j] * op(x) for j, op in enumerate(self.candidates))

    # --------------------------------------------------------- the alpha rescale
    def remember_pair_alpha(self) -> None:
        """Record the pair's ``alpha`` before the optimiser step (see :meth:`rescale`)."""
        self._old_pair_alpha = self.alpha.detach()[list(self.pair)].clone() if self.pair else None

    @torch.no_grad()
    def rescale(self) -> None:
        """Shift the pair's updated ``alpha`` so that ``sum exp`` over the pair is what it was before the
        step: the other paths keep their probabilities (ProxylessNAS, section 3.2.1)."""
        if self.pair is None or self._old_pair_alpha is None:
            return
        idx = list(self.pair)
        new = self.alpha[idx]
        offset = torch.logsumexp(new, 0) - torch.logsumexp(self._old_pair_alpha, 0)
        self.alpha[idx] = new - offset
        self._old_pair_alpha = None


def weights_without(module: nn.Module, arch_parameters: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters of ``module`` other than its architecture parameters (what the weight optimiser gets)."""
    ids = {id(p) for p in arch_parameters}
    return [p for p in module.parameters() if id(p) not in ids]


def entropy(p: torch.Tensor) -> float:
    """Entropy (nats) of a probability vector; ``log N`` when uniform."""
    p = p.detach().clamp_min(1e-12)
    return float(-(p * p.log()).sum())


def max_entropy(n: int) -> float:
    return math.log(n)
