"""A REINFORCE-trained LSTM controller: Zoph & Le, "Neural Architecture Search with Reinforcement
Learning" (ICLR 2017), with the moving-average baseline and entropy bonus of ENAS (Pham et al., ICML 2018)
and, optionally, MnasNet's latency-shaped reward (Tan et al., CVPR 2019).

The controller emits one categorical decision per dimension of *any* search space, in the space's order:
at each active dimension an LSTM cell reads the embedding of the previous decision (a learned start
vector for the first), and a per-dimension linear head turns its hidden state into logits over that
dimension's choices. Inactive dimensions (blocks beyond a stage's depth) take the canonical choice, cost no
LSTM step and carry no log-probability, so the policy only learns the decisions that matter.

Each ``tell`` computes a reward ``R`` and, every ``batch_size`` tells, takes one Adam step on

    loss = -mean_b[(R_b - baseline) / scale * log pi(arch_b)] - entropy_weight * mean_b[H(pi | arch_b)]

where the baseline is an exponential moving average of past rewards (``baseline_decay``), ``scale`` the
same average of their absolute deviation from it (with ``normalize=True``; 1 otherwise), and ``H`` the
summed entropy of the per-dimension distributions along the told architecture. The reward is the first
objective (signed so that larger is better) or, with ``latency_target`` set, MnasNet's
``accuracy * (latency / target) ** w`` with ``w = latency_weights[0]`` when the latency meets the target
and ``latency_weights[1]`` otherwise (``(-0.07, -0.07)`` is MnasNet's soft constraint, ``(0, -1)`` its
hard one). Infeasible results get ``infeasible_reward`` (default: the lowest reward seen so far).

Evaluations are expensive and an architecture's result does not change, so ``ask`` redraws a sample that
was already told: up to ``skip_seen`` draws from the policy, then as many at twice and at four times its
temperature (a flatter version of the same policy). Without it a sharpening policy spends most of a small
budget proposing the architectures it has already seen.

The controller is small (one LSTM cell of ``hidden_size`` units), so it is written in numpy with its
gradients derived by hand (backpropagation through the few LSTM steps) and a numpy Adam: an ask and a
tell cost a fraction of a millisecond, and the strategy needs no torch.

State: the weights are a function of the seed and the sequence of tells, so replaying the stored trials
through ``tell`` rebuilds the controller exactly (the resume contract of :mod:`edgenas.search.base`).
Sampling uses the per-ask generator of the base class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.search._blas import single_thread_blas
from edgenas.search.base import Strategy, TrialResult
from edgenas.spaces.base import Arch, SearchSpace


@dataclass
class ReinforceController(Strategy):
    """REINFORCE with an LSTM controller (see the module docstring for the parameters' meaning)."""

    hidden_size: int = 32
    learning_rate: float = 0.002
    baseline_decay: float = 0.9
    entropy_weight: float = 0.01
    normalize: bool = True
    batch_size: int = 1
    temperature: float = 1.0
    init_scale: float = 0.1
    latency_target: float | None = None
    latency_weights: tuple[float, float] = (-0.07, -0.07)
    latency_metric: str = "latency"
    infeasible_reward: float | None = None
    skip_seen: int = 20
    baseline: float | None = field(default=None, init=False)
    _policy: LSTMPolicy = field(init=False, repr=False)
    _adam: Adam = field(init=False, repr=False)
    _scale: float | None = field(default=None, init=False, repr=False)
    _buffer: list[tuple[Arch, float]] = field(default_factory=list, init=False, repr=False)
    _lowest: float = field(default=math.inf, init=False, repr=False)
    _told: set[tuple[Any, ...]] = field(default_factory=set, init=False, repr=False)

    name = "reinforce"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        init_rng = np.random.default_rng([self.seed, 0x5EED])
        self._policy = LSTMPolicy(self.space, self.hidden_size, init_rng, self.init_scale)
        self._adam = Adam(self._policy.flat, self.learning_rate)

    # ------------------------------------------------------------------ ask
    def _propose(self, rng: np.random.Generator) -> Arch:
        with single_thread_blas():
            return self._propose_new(rng)

    def _propose_new(self, rng: np.random.Generator) -> Arch:
        arch = self._policy.sample(rng, self.temperature, 1)[0]
        if self.skip_seen > 0 and self._signature(arch) in self._told:
            # Redraw batches at once (one vectorised pass each), flattening the policy a little more each
            # round, and keep the first new architecture.
            for heat in (1.0, 2.0, 4.0):
                for other in self._policy.sample(rng, self.temperature * heat, self.skip_seen):
                    if self._signature(other) not in self._told:
                        return other
        return arch

    def _signature(self, arch: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(arch[n] for n in self.space.names)

    def probabilities(self, arch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The policy's distribution at each active dimension along ``arch`` (for inspection and tests)."""
        canon = self.space.validate(arch)
        names, idx = self._policy.decisions([canon])
        cache = self._policy.forward(names, idx, self.temperature)
        return {n: p[0] for n, p in zip(names, cache["probs"], strict=True)}

    # ----------------------------------------------------------------- tell
    def reward(self, result: TrialResult) -> float | None:
        """The reward of a result (``None``: nothing to learn from, e.g. infeasible before any reward)."""
        if not result.feasible:
            if self.infeasible_reward is not None:
                return self.infeasible_reward
            return self._lowest if math.isfinite(self._lowest) else None
        value = result.score(self.objectives)
        if self.latency_target is not None:
            latency = result.metrics.get(self.latency_metric, math.nan)
            if not (latency > 0 and math.isfinite(latency)):
                return None
            w = self.latency_weights[0] if latency <= self.latency_target else self.latency_weights[1]
            value = value * (latency / self.latency_target) ** w
        return value if math.isfinite(value) else None

    def _observe(self, arch: Arch, result: TrialResult) -> None:
        self._told.add(self._signature(arch))
        r = self.reward(result)
        if r is None:
            return
        if result.feasible:
            self._lowest = min(self._lowest, r)
        if self.baseline is None:
            self.baseline = r
        advantage = r - self.baseline
        if self.normalize:
            if self._scale is None:  # starts at the first non-zero deviation (the first one is zero)
                self._scale = abs(advantage) or None
            else:
                self._scale = self.baseline_decay * self._scale + (1.0 - self.baseline_decay) * abs(advantage)
            advantage = advantage / self._scale if self._scale else 0.0
        self.baseline = self.baseline_decay * self.baseline + (1.0 - self.baseline_decay) * r
        self._buffer.append((arch, advantage))
        if len(self._buffer) >= self.batch_size:
            with single_thread_blas():
                self._update()

    def _update(self) -> None:
        groups: dict[tuple[str, ...], list[tuple[Arch, float]]] = {}
        for arch, advantage in self._buffer:
            groups.setdefault(tuple(self.space.active_names(arch)), []).append((arch, advantage))
        flat_grad = np.zeros_like(self._policy.flat)
        grads = self._policy.views(flat_grad)
        for items in groups.values():
            names, idx = self._policy.decisions([a for a, _ in items])
            adv = np.array([v for _, v in items])
            self._policy.accumulate_grad(
                names, idx, adv, self.entropy_weight, self.temperature, len(self._buffer), grads
            )
        self._adam.step(flat_grad)
        self._buffer.clear()

    def loss(self, archs: Sequence[Mapping[str, Any]], advantages: Sequence[float]) -> float:
        """The REINFORCE loss of a batch (what :meth:`_update` descends; for gradient checks)."""
        names, idx = self._policy.decisions([self.space.validate(a) for a in archs])
        cache = self._policy.forward(names, idx, self.temperature)
        adv = np.asarray(advantages, dtype=float)
        rows = np.arange(len(archs))
        log_prob = sum(lp[rows, idx[:, t]] for t, lp in enumerate(cache["logp"]))
        entropy = sum(-(p * lp).sum(-1) for p, lp in zip(cache["probs"], cache["logp"], strict=True))
        return float(np.mean(-adv * log_prob - self.entropy_weight * entropy))


class LSTMPolicy:
    """The controller network in numpy: start vector, LSTM cell, per-dimension embeddings and heads.

    ``params`` maps names to float64 arrays: ``start`` (H), ``w_x`` (4H x H), ``w_h`` (4H x H), ``b``
    (4H; gates in the order input, forget, cell, output), and per dimension k ``head{k}`` (n_k x H),
    ``bias{k}`` (n_k) and ``embed{k}`` (n_k x H). All are drawn uniformly from ``[-scale, scale]`` (the
    initialisation of ENAS's controller).
    """

    def __init__(self, space: SearchSpace, hidden: int, rng: np.random.Generator, scale: float) -> None:
        self.space, self.hidden = space, hidden
        self._k = {d.name: k for k, d in enumerate(space.dimensions)}
        shapes: dict[str, tuple[int, ...]] = {
            "start": (hidden,), "w_x": (4 * hidden, hidden), "w_h": (4 * hidden, hidden), "b": (4 * hidden,)
        }
        for k, d in enumerate(space.dimensions):
            n = len(d.choices)
            shapes.update({f"head{k}": (n, hidden), f"bias{k}": (n,), f"embed{k}": (n, hidden)})
        self._shapes = shapes
        # One flat buffer holds every parameter, so the optimiser updates it in one vectorised step;
        # ``params`` are named views into it.
        self.flat = rng.uniform(-scale, scale, size=sum(math.prod(sh) for sh in shapes.values()))
        self.params = self.views(self.flat)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into a flat vector laid out like the parameters."""
        out, offset = {}, 0
        for name, shape in self._shapes.items():
            size = math.prod(shape)
            out[name] = flat[offset : offset + size].reshape(shape)
            offset += size
        return out

    # ----------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator, temperature: float, count: int) -> list[Arch]:
        """``count`` architectures drawn from the policy in one vectorised pass.

        Activity is decided per sample; the LSTM steps over the union of active dimensions, and a sample
        for which a dimension is inactive keeps its state and input through that step."""
        p = self.params
        archs: list[Arch] = [{} for _ in range(count)]
        h = np.zeros((count, self.hidden))
        c = np.zeros((count, self.hidden))
        x = np.broadcast_to(p["start"], (count, self.hidden))
        for k, d in enumerate(self.space.dimensions):
            active = np.array([self.space.is_active(d.name, a) for a in archs])
            if not active.any():
                for a in archs:
                    a[d.name] = d.choices[0]
                continue
            i, f, g, o = _gates(x @ p["w_x"].T + h @ p["w_h"].T + p["b"])
            c_new = f * c + i * g
            h_new = o * np.tanh(c_new)
            logits = (h_new @ p[f"head{k}"].T + p[f"bias{k}"]) / temperature
            cdf = np.cumsum(np.exp(logits - logits.max(-1, keepdims=True)), axis=-1)
            u = rng.random(count) * cdf[:, -1]
            choice = np.minimum((cdf < u[:, None]).sum(-1), len(d.choices) - 1)
            for a, on, ch in zip(archs, active, choice, strict=True):
                a[d.name] = d.choices[int(ch)] if on else d.choices[0]
            keep = active[:, None]
            h = np.where(keep, h_new, h)
            c = np.where(keep, c_new, c)
            x = np.where(keep, p[f"embed{k}"][choice], x)
        return archs

    # ------------------------------------------------ teacher-forced batch
    def decisions(self, archs: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
        """The active dimensions (shared by all of ``archs``) and the chosen indices, ``(batch, steps)``."""
        names = self.space.active_names(archs[0])
        idx = np.array([[self.space[n].index(a[n]) for n in names] for a in archs], dtype=np.int64)
        return names, idx.reshape(len(archs), len(names))

    def forward(self, names: list[str], idx: np.ndarray, temperature: float) -> dict[str, list[Any]]:
        """Run the LSTM along the given decisions; keep what the backward pass needs."""
        p = self.params
        batch = len(idx)
        h = np.zeros((batch, self.hidden))
        c = np.zeros((batch, self.hidden))
        x = np.broadcast_to(p["start"], (batch, self.hidden))
        cache: dict[str, list[Any]] = {key: [] for key in ("x", "h_prev", "c_prev", "gates", "c", "h",
                                                           "probs", "logp")}
        for t, name in enumerate(names):
            k = self._k[name]
            z = x @ p["w_x"].T + h @ p["w_h"].T + p["b"]
            i, f, g, o = _gates(z)
            cache["x"].append(x)
            cache["h_prev"].append(h)
            cache["c_prev"].append(c)
            c = f * c + i * g
            h = o * np.tanh(c)
            cache["gates"].append((i, f, g, o))
            cache["c"].append(c)
            cache["h"].append(h)
            logits = (h @ p[f"head{k}"].T + p[f"bias{k}"]) / temperature
            logits = logits - logits.max(-1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            cache["logp"].append(logp)
            cache["probs"].append(np.exp(logp))
            x = p[f"embed{k}"][idx[:, t]]
        return cache

    def accumulate_grad(
        self, names: list[str], idx: np.ndarray, adv: np.ndarray, entropy_weight: float, temperature: float,
        denominator: int, grads: dict[str, np.ndarray],
    ) -> None:
        """Add the gradient of ``sum_b(-adv_b log pi_b - entropy_weight H_b) / denominator`` to ``grads``."""
        p = self.params
        cache = self.forward(names, idx, temperature)
        batch, steps = idx.shape
        rows = np.arange(batch)
        dh_next = np.zeros((batch, self.hidden))
        dc_next = np.zeros((batch, self.hidden))
        for t in reversed(range(steps)):
            k = self._k[names[t]]
            probs, logp = cache["probs"][t], cache["logp"][t]
            entropy = -(probs * logp).sum(-1, keepdims=True)
            onehot = np.zeros_like(probs)
            onehot[rows, idx[:, t]] = 1.0
            # d(-adv log p_a)/dlogit = -adv (onehot - p); d(-w H)/dlogit = w p (log p + H)
            dlogits = -adv[:, None] * (onehot - probs) + entropy_weight * probs * (logp + entropy)
            dlogits /= denominator * temperature
            h = cache["h"][t]
            grads[f"head{k}"] += dlogits.T @ h
            grads[f"bias{k}"] += dlogits.sum(0)
            dh = dlogits @ p[f"head{k}"] + dh_next
            i, f, g, o = cache["gates"][t]
            tanh_c = np.tanh(cache["c"][t])
            dc = dc_next + dh * o * (1.0 - tanh_c**2)
            dz = np.concatenate([
                dc * g * i * (1.0 - i),
                dc * cache["c_prev"][t] * f * (1.0 - f),
                dc * i * (1.0 - g**2),
                dh * tanh_c * o * (1.0 - o),
            ], axis=1)
            grads["w_x"] += dz.T @ cache["x"][t]
            grads["w_h"] += dz.T @ cache["h_prev"][t]
            grads["b"] += dz.sum(0)
            dx = dz @ p["w_x"]
            if t == 0:
                grads["start"] += dx.sum(0)
            else:
                np.add.at(grads[f"embed{self._k[names[t - 1]]}"], idx[:, t - 1], dx)
            dh_next = dz @ p["w_h"]
            dc_next = dc * f


def _gates(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = z.shape[-1] // 4
    s = _sigmoid(z)
    return s[..., :n], s[..., n : 2 * n], np.tanh(z[..., 2 * n : 3 * n]), s[..., 3 * n :]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


class Adam:
    """Adam (Kingma & Ba, ICLR 2015) on a flat numpy parameter vector, updated in place."""

    def __init__(self, params: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0

    def step(self, grad: np.ndarray) -> None:
        self.t += 1
        b1, b2 = self.betas
        self.m *= b1
        self.m += (1.0 - b1) * grad
        self.v *= b2
        self.v += (1.0 - b2) * grad * grad
        m_hat = self.m / (1.0 - b1**self.t)
        v_hat = self.v / (1.0 - b2**self.t)
        self.params -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
