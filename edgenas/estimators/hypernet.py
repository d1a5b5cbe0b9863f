"""SMASH: a HyperNet generates the weights of any NB201 cell network from its architecture's encoding.

Brock et al., "SMASH: One-Shot Model Architecture Search through HyperNetworks" (ICLR 2018): instead of
training each candidate, train one auxiliary network that maps an architecture's encoding to the weights of
the main network; the validation accuracy of a candidate with *generated* weights ranks it, at the cost of
one training run. Here the main network is NB201's skeleton (Dong & Yang, ICLR 2020; stem, three stages of
cells with residual reductions, classifier) and the generated weights are those of every edge's
convolution (``nor_conv_1x1``, ``nor_conv_3x3``) in every cell:

``W(cell, edge, op | arch) = B_(stage, op) · h(e_arch, e_cell, e_edge)``

where ``h`` is a small MLP over the architecture's one-hot encoding and the position of the cell and edge,
and ``B`` a learned basis per stage and op (a low-rank factorisation of SMASH's weight generator; SMASH's
own encoding is a memory-bank description of its DenseNet-like space, NB201's is the six edges' ops). The
stem, reductions and classifier are ordinary weights shared by all architectures.

``graph=True`` replaces ``h`` by a Graph HyperNetwork's encoder (Zhang et al., ICLR 2019;
:mod:`edgenas.estimators.graph_hypernet`): a GNN over the whole network's computation graph embeds each edge
op, and the code ``z`` of its weights is decoded from that embedding (no position code).

``conditioned=False`` replaces ``h``'s input by the cell and edge position only, so each op's weights are
the same whatever the architecture: plain weight sharing with uniformly sampled paths (the random-search
with weight-sharing baseline of Li & Talwalkar, UAI 2019) in the same network, for comparison.

Generated convolutions are followed by batch norm without running statistics (every batch is normalised by
its own statistics, in training and evaluation alike), since the statistics of one architecture's
generated weights say nothing about another's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.estimators.graph_hypernet import GraphEncoder
from edgenas.evaluators import EvalContext, Evaluator
from edgenas.io import atomic_write_json
from edgenas.models.nb201 import AvgPool3x3, ResidualReduction
from edgenas.spaces.nb201 import EDGES, NB201Space
from edgenas.supernets.checkpoint_files import read_checkpoint, save_checkpoint

FORMAT = "edgenas-hypernet-checkpoint/1"
CONV_OPS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


@dataclass
class HyperNetConfig:
    """Main network size, HyperNet size and training settings."""

    channels: int = 16
    cells_per_stage: int = 2
    hidden: int = 64
    rank: int = 16
    conditioned: bool = True
    graph: bool = False
    rounds: int = 1
    steps: int = 1000
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0


class HyperNB201(nn.Module):
    """The NB201 skeleton whose edge convolutions a HyperNet generates (see the module docstring)."""

    def __init__(self, space: NB201Space, num_classes: int, in_channels: int, cfg: HyperNetConfig) -> None:
        super().__init__()
        self.space, self.cfg = space, cfg
        self.num_classes, self.in_channels = num_classes, in_channels
        c, n = cfg.channels, cfg.cells_per_stage
        self.widths = (c, 2 * c, 4 * c)
        self.n_cells = 3 * n
        self.ops = list(space[space.names[0]].choices)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.reductions = nn.ModuleList([ResidualReduction(c, 2 * c), ResidualReduction(2 * c, 4 * c)])
        self.pools = nn.ModuleList([AvgPool3x3(w) for w in self.widths])
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * c), nn.ReLU())
        self.classifier = nn.Linear(4 * c, num_classes)
        if cfg.graph and not cfg.conditioned:
            raise EdgenasError("a graph hypernetwork is conditioned on the architecture; drop one of graph / "
                               "conditioned=False (--ghn / --shared)")
        self.hyper: nn.Module
        if cfg.graph:
            self.hyper = GraphEncoder(self.ops, self.n_cells, n, cfg.hidden, 2 * cfg.rank, cfg.rounds)
        else:
            code = (space.encoding_size if cfg.conditioned else 0) + self.n_cells + len(EDGES)
            self.hyper = nn.Sequential(nn.Linear(code, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden),
                                       nn.ReLU(), nn.Linear(cfg.hidden, 2 * cfg.rank))
        # one basis per stage and conv op: (out * in * k * k, rank), scaled so generated weights start He-like
        self.basis = nn.ParameterDict()
        for s, w in enumerate(self.widths):
            for op, k in CONV_OPS.items():
                fan_in = w * k * k
                self.basis[f"s{s}_{op}"] = nn.Parameter(torch.randn(w * w * k * k, cfg.rank)
                                                        * math.sqrt(2.0 / fan_in / cfg.rank))
        self.arch: dict[str, Any] = {}
        self._weights: dict[tuple[int, int], torch.Tensor] = {}

    # ------------------------------------------------------------------ the contract
    def set_active(self, arch: Mapping[str, Any]) -> None:
        self.arch = self.space.validate(arch)

    def _codes(self) -> torch.Tensor:
        """One row per (cell, edge): [arch one-hot | cell one-hot | edge one-hot]."""
        dev = self.classifier.weight.device
        rows = []
        arch_code = torch.as_tensor(self.space.encode(self.arch), dtype=torch.float32, device=dev)
        eye_c, eye_e = torch.eye(self.n_cells, device=dev), torch.eye(len(EDGES), device=dev)
        for cell in range(self.n_cells):
            for e in range(len(EDGES)):
                parts = ([arch_code] if self.cfg.conditioned else []) + [eye_c[cell], eye_e[e]]
                rows.append(torch.cat(parts))
        return torch.stack(rows)

    def generated_weights(self) -> dict[tuple[int, int], torch.Tensor]:
        """The conv weight of every (cell, edge) whose op is a convolution, for the active architecture."""
        ops = [str(self.arch[name]) for name in self.space.names]
        z = self.hyper(ops) if self.cfg.graph else self.hyper(self._codes())
        z = z.view(self.n_cells, len(EDGES), 2, self.cfg.rank)
        out = {}
        for cell in range(self.n_cells):
            s = cell // self.cfg.cells_per_stage
            w = self.widths[s]
            for e, op in enumerate(ops):
                if op in CONV_OPS:
                    k = CONV_OPS[op]
                    which = list(CONV_OPS).index(op)
                    out[cell, e] = (self.basis[f"s{s}_{op}"] @ z[cell, e, which]).view(w, w, k, k)
        return out

    def _cell(self, x: torch.Tensor, cell: int, weights: Mapping[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        ops = [str(self.arch[name]) for name in self.space.names]
        pool = self.pools[cell // self.cfg.cells_per_stage]
        nodes = [x]
        for j in range(1, 4):
            total: torch.Tensor | None = None
            for e, (i, jj) in enumerate(EDGES):
                if jj != j or ops[e] == "none":
                    continue
                h = nodes[i]
                if ops[e] == "skip_connect":
                    y = h
                elif ops[e] == "avg_pool_3x3":
                    y = pool(h)
                else:
                    k = CONV_OPS[ops[e]]
                    y = F.batch_norm(F.conv2d(F.relu(h), weights[cell, e], padding=k // 2), None, None,
                                     training=True)
                total = y if total is None else total + y
            nodes.append(total if total is not None else torch.zeros_like(x))
        return nodes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.generated_weights()
        x = self.stem(x)
        for cell in range(self.n_cells):
            if cell and cell % self.cfg.cells_per_stage == 0:
                x = self.reductions[cell // self.cfg.cells_per_stage - 1](x)
            x = self._cell(x, cell, weights)
        return self.classifier(self.lastact(x).mean((2, 3)))


# ------------------------------------------------------------------------------------------ training
def _describe(built: Mapping[str, Any]) -> str:
    return f"space '{built['space']}' with {built['num_classes']} classes and {built['in_channels']} input channels"


def train_hypernet(space: NB201Space, data: Any, out: str | Path, cfg: HyperNetConfig | None = None,
                   resume: bool = False, progress: Callable[[str], None] | None = None,
                   checkpoint_every: int = 200) -> dict[str, Any]:
    """Train the HyperNet (and the shared weights) on uniformly sampled architectures, one per step
    (SMASH); ``OUT/last.pt`` every ``checkpoint_every`` steps (``resume`` continues it), ``OUT/hypernet.pt``
    at the end. ``data`` is an :class:`edgenas.data.Dataset` (its resolution is used as is)."""
    cfg = cfg or HyperNetConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    built = {"space": space.name, "space_config": json.loads(json.dumps(space.to_dict())),
             "num_classes": data.num_classes, "in_channels": data.in_channels}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = HyperNB201(space, data.num_classes, data.in_channels, cfg)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rng = np.random.default_rng(cfg.seed)
    step, history, losses = 0, [], []
    if resume:
        blob = read_checkpoint(out / "last.pt", FORMAT, (), "hypernet", "hypernet", "edgenas hypernet train")
        if json.loads(blob["built_for"]) != built or json.loads(blob["config"]) != asdict(cfg):
            raise EdgenasError(f"'{blob['path']}' was made for {_describe(json.loads(blob['built_for']))} with "
                               f"settings {blob['config']}; resume with the same data and settings")
        net.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        step, history = int(blob["step"]), json.loads(blob["history"])
        rng.bit_generator.state = json.loads(blob["rng"])
        say(f"resumed at step {step} of {cfg.steps}")
    x_train, y_train = data.x_train, data.y_train
    n = len(y_train)
    t0 = time.perf_counter()

    def save(path: Path, with_optimizer: bool) -> None:
        blob = {"format": FORMAT, "built_for": json.dumps(built), "config": json.dumps(asdict(cfg)),
                "space_ref": space.ref or space.name, "model": net.state_dict(), "step": step,
                "history": json.dumps(history), "rng": json.dumps(rng.bit_generator.state)}
        if with_optimizer:
            blob["optimizer"] = opt.state_dict()
        save_checkpoint(path, blob)

    net.train()
    while step < cfg.steps:
        idx = torch.as_tensor(rng.integers(0, n, cfg.batch_size))
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        net.set_active(space.sample(rng))
        loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % checkpoint_every == 0 or step == cfg.steps:
            history.append({"step": step, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0})
            losses = []
            save(out / "last.pt", with_optimizer=True)
            say(f"step {step}/{cfg.steps}: training loss {history[-1]['loss']:.3f}")
    save(out / "hypernet.pt", with_optimizer=False)
    report = {"space": space.name, "config": asdict(cfg), "history": history, "built_for": built}
    atomic_write_json(out / "report.json", report)
    return report


def load_hypernet(path: str | Path, space: NB201Space | None = None) -> tuple[HyperNB201, dict[str, Any]]:
    """A trained HyperNet (file or ``edgenas hypernet train`` folder); with ``space``, built for it."""
    from edgenas.spaces import get_space

    blob = read_checkpoint(path, FORMAT, ("hypernet.pt", "last.pt"), "hypernet", "hypernet",
                           "edgenas hypernet train")
    built = json.loads(blob["built_for"])
    if space is None:
        space = get_space(blob.get("space_ref") or built["space"])
    if (space.name, json.loads(json.dumps(space.to_dict()))) != (built["space"], built["space_config"]):
        raise EdgenasError(f"hypernet '{blob['path']}' was built for {_describe(built)}, not for space '{space.name}'")
    net = HyperNB201(space, built["num_classes"], built["in_channels"], HyperNetConfig(**json.loads(blob["config"])))
    net.load_state_dict(blob["model"])
    return net.eval(), blob


@torch.no_grad()
def hypernet_accuracy(net: HyperNB201, arch: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 500) -> float:
    """Top-1 (%) of ``arch`` with generated weights (batch statistics per batch of ``batch_size``)."""
    net.eval()
    net.set_active(arch)
    hits = 0
    for i in range(0, len(y), batch_size):
        hits += int((net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * hits / max(len(y), 1)


class HyperNetAccuracy(Evaluator):
    """``--estimator hypernet:PATH``: validation accuracy (%) with HyperNet-generated weights (SMASH's and GHN's
    score)."""

    name, unit, direction, cheap = "accuracy", "%", "maximize", False

    def __init__(self, net: HyperNB201, x: torch.Tensor, y: torch.Tensor, source: str) -> None:
        self.net, self.x, self.y, self.source = net, x, y, source

    def __call__(self, arch: Mapping[str, Any]) -> float:
        return hypernet_accuracy(self.net, arch, self.x, self.y)

    def describe(self) -> str:
        cfg = self.net.cfg
        kind = "graph HyperNet (GHN)" if cfg.graph else "SMASH HyperNet" if cfg.conditioned else "shared weights"
        return f"accuracy [%] with weights generated by the {kind} {self.source}"


def hypernet_estimator(path: str, ctx: EvalContext) -> Evaluator:
    """The factory of ``hypernet:PATH`` (a checkpoint or an ``edgenas hypernet train`` folder)."""
    if not path:
        raise EdgenasError("hypernet: needs a path, e.g. --estimator hypernet:runs/smash")
    if not isinstance(ctx.space, NB201Space):
        raise EdgenasError(f"the HyperNet (SMASH or GHN) generates NB201 cell networks; space '{ctx.space.name}' "
                           "is not one")
    net, blob = load_hypernet(path, ctx.space)
    data = ctx.data
    if (data.num_classes, data.in_channels) != (net.num_classes, net.in_channels):
        raise EdgenasError(f"hypernet '{blob['path']}' was trained for {net.num_classes} classes and "
                           f"{net.in_channels} input channels; the data '{ctx.data_spec}' has "
                           f"{data.num_classes} and {data.in_channels}")
    return HyperNetAccuracy(net, data.x_val, data.y_val, blob["path"])
