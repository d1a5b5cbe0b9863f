"""The training loop shared by ProxylessNAS and DARTS: alternate weight and architecture steps, resumable.

Both methods (Cai et al., ICLR 2019; Liu et al., ICLR 2019) train one over-parameterised network and its
architecture parameters ``alpha`` alternately: a weight step on a batch of the *train* split (SGD with
Nesterov momentum, cosine schedule), then an architecture step on a batch of a held-out *validation*
split (Adam; DARTS's first-order approximation). The network's mode decides what a step computes:
binarized paths (one sampled path per block for a weight step, the two-path estimator for an
architecture step) or DARTS's relaxation (every path, weighted). Optionally the architecture loss has a
latency term (:mod:`edgenas.supernets.latency_loss`).

Steering to a latency target. The paper's losses trade accuracy against latency with a fixed ``lambda``
(additive) or ``beta`` (multiplicative), which does not aim at a given target. With ``adapt > 0`` that
coefficient follows a dual-ascent update after every architecture step, ``coef += adapt * (E[lat] /
target - 1)`` (the multiplier of the constraint ``E[lat] = target``), so the expected latency settles at
the target; ``adapt = 0`` gives the papers' fixed forms. That multiplier may turn negative while
``E[lat]`` is below the target, and the latency term then *rewards* slower paths; with
``constraint="at-most"`` it is projected to ``>= 0`` after each update (the multiplier of ``E[lat] <=
target``): below the target only the cross-entropy moves ``alpha``. The derived architecture is then, by default,
the most probable one (maximum ``sum log p``) whose table latency lies within ``(1 +- window) x target``
(``derive="window"``; ``"budget"``: at most the target), an exact multiple-choice knapsack
(:func:`~edgenas.supernets.latency_loss.most_probable_under`). ``derive="argmax"`` is the papers'
per-block argmax; when the search is short and the distributions are still broad, the argmax of each
block favours its cheap paths and lands well below ``E[lat]``, which is why the window is the default.
``derive="select"`` (ours, in the spirit of the accuracy-based selection of single-path one-shot NAS, Guo et
al., ECCV 2020, and Once-for-All): the window's architecture and up to ``select_from - 1`` others drawn from
``alpha``'s distribution restricted to the window (perturb-and-MAP: Gumbel noise on ``log p``, then the same
knapsack), each scored with the supernet's weights (batch norm recalibrated) on the *architecture* split,
never on the validation images; the best one is derived. Only the derivation changes, so a finished search
can be derived again (``--resume --derive select``).

Architecture steps run every ``arch_every`` weight steps (ProxylessNAS updates ``alpha`` every 5 steps in
its released settings), after ``warmup_epochs`` of weight-only training.

Everything the loop needs to continue is checkpointed after every epoch (``OUT/checkpoint.pt``: weights,
``alpha``, both optimisers, the coefficient, the sampler state, the history), so an interrupted search
resumes where its last epoch ended. Results: ``OUT/arch.json`` (the derived architecture, like an
exported model's ``.json``), ``OUT/history.json``, ``OUT/alpha.png``, ``OUT/curves.png``, and an
experiment store (``config.json``, ``study.db``, ``trials.csv``, ``pareto.json``) holding the derived
architecture as one trial, so ``edgenas export OUT`` trains it from scratch and exports it.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.errors import EdgenasError, unknown_name
from edgenas.io import atomic_write_json, machine_info
from edgenas.supernets.checkpoint_files import save_checkpoint
from edgenas.supernets.latency_loss import LOSS_FORMS, BlockLatency, latency_loss, most_probable_under

METHODS = ("proxyless", "darts")
DERIVE = ("window", "budget", "argmax", "select")
CONSTRAINTS = ("equal", "at-most")
#: Settings that change only how the architecture is derived from a trained search, not the training: a
#: resumed (or finished) search may change them.
DERIVATION_ONLY = ("derive", "window", "select_from")
#: Settings that only shape the initial weights, which a checkpoint replaces: a resume keeps the stored value
#: (searches from before a setting existed ran without it: ``zero_gamma`` False).
INIT_ONLY = {"zero_gamma": False}
TARGETS = ("cpu", "lut:PATH")


#: Per-method defaults of the weight sharing and the weight learning rate. ProxylessNAS's published
#: setting (each candidate its own weights) leaves the over-parameterised network at chance on CIFAR-10 at
#: CPU budgets, at lr 0.1 and at 0.02-0.03 alike, while nested weights at lr 0.03 learn
#: (bench/proxyless_supernet_training.py, docs/gradient_nas.md); DARTS keeps its separate candidates.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "proxyless": {"sharing": "nested", "lr": 0.03, "zero_gamma": True},
    "darts": {"sharing": "none", "lr": 0.1, "zero_gamma": False},
}


@dataclass
class GradientSearchConfig:
    """Everything that defines a ProxylessNAS / DARTS search; saved as ``OUT/search.json``."""

    out: str
    method: str = "proxyless"
    space: str = "mbv3-tiny"
    data: str = "digits"
    target: str | None = None
    latency_ms: float | None = None
    loss: str = "additive"
    lam: float = 1.0
    beta: float = 0.6
    adapt: float = 0.5
    constraint: str = "equal"
    epochs: int = 8
    warmup_epochs: int = 2
    batch_size: int = 32
    lr: float | None = None  # None: the method's default (METHOD_DEFAULTS)
    weight_decay: float = 4e-5
    arch_lr: float = 0.1
    arch_fraction: float = 0.2
    max_train: int | None = None
    max_eval: int = 1000
    resolution: int | None = None
    width: float | None = None
    candidates: list[list[int]] | None = None
    sharing: str | None = None  # None: the method's default (METHOD_DEFAULTS)
    derive: str = "window"
    window: float = 0.05
    select_from: int = 16  # derive="select": candidates scored with the supernet's weights
    arch_every: int = 5
    seed: int = 0
    threads: int = 1
    backend: str = "onnxruntime"
    cache_dir: str | None = None
    retrain_epochs: int = 2
    plots: bool = True
    nb201_channels: int = 8
    nb201_cells: int = 1
    init_weights: str | None = None  # an earlier search's folder: its network weights start this one
    # mbv3: residual candidates start as the identity (zero-gamma, Goyal et al. 2017); None: the method's default
    zero_gamma: bool | None = None

    def __post_init__(self) -> None:
        for key, value in METHOD_DEFAULTS.get(self.method, METHOD_DEFAULTS["darts"]).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise unknown_name("method", self.method, METHODS)
        if self.loss not in LOSS_FORMS:
            raise unknown_name("latency loss form", self.loss, LOSS_FORMS)
        if self.derive not in DERIVE:
            raise unknown_name("derivation", self.derive, DERIVE)
        if self.constraint not in CONSTRAINTS:
            raise unknown_name("--constraint", self.constraint, CONSTRAINTS)
        from edgenas.supernets.proxyless import SHARING

        if self.sharing not in SHARING:
            raise unknown_name("--weight-sharing", self.sharing, SHARING)
        if self.epochs <= 0 or not 0 <= self.warmup_epochs <= self.epochs:
            raise EdgenasError(f"--epochs must be positive and at least --warmup-epochs ({self.epochs}, "
                               f"{self.warmup_epochs}); equal means a weight-only run (a warm-up to share)")
        if not 0 < self.arch_fraction < 1:
            raise EdgenasError(f"--arch-fraction must be in (0, 1), got {self.arch_fraction}")
        if self.select_from < 1:
            raise EdgenasError(f"--select-from must be at least 1, got {self.select_from}")
        if self.arch_every < 1 or not 0 <= self.window < 1:
            raise EdgenasError(f"--arch-every must be >= 1 and --window in [0, 1) ({self.arch_every}, {self.window})")
        if self.batch_size < 2:
            raise EdgenasError("--batch-size must be at least 2 (batch norm)")
        if self.latency_ms is not None and not self.target:
            raise EdgenasError("--latency-ms needs a --target (cpu or lut:PATH)")
        if self.target and self.latency_ms is None:
            raise EdgenasError(f"--target {self.target} needs a latency target: --latency-ms X")
        if self.target and self.target != "cpu" and not self.target.startswith("lut:"):
            raise unknown_name("gradient-search target", self.target, TARGETS)
        if self.target == "lut:":
            raise EdgenasError("lut: needs a path, e.g. --target lut:lut.json")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GradientSearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class GradientSearchResult:
    out: Path
    arch: dict[str, Any]
    metrics: dict[str, float]
    seconds: float
    history: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[int, int, dict[str, float]], None]


# ------------------------------------------------------------------------------------------ building
def build_network(config: GradientSearchConfig, space: Any, num_classes: int, in_channels: int) -> Any:
    """The over-parameterised network of the method and space."""
    mode = "binary" if config.method == "proxyless" else "darts"
    if space.name.startswith("nb201") or type(space).__name__ == "NB201Space":
        if config.method != "darts":
            raise EdgenasError("ProxylessNAS runs on MBV3-style spaces; use 'edgenas darts search' for nb201")
        if config.sharing != "none":
            raise EdgenasError("--weight-sharing applies to MBV3-style spaces (candidate MBConvs); nb201's cell "
                               "operations have nothing to share")
        from edgenas.supernets.darts import DartsNB201Net

        return DartsNB201Net(space, num_classes, in_channels, config.nb201_channels, config.nb201_cells,
                             seed=config.seed)
    from edgenas.supernets.proxyless import ProxylessSupernet

    cands = [tuple(c) for c in config.candidates] if config.candidates else None
    return ProxylessSupernet(space, num_classes, in_channels, config.resolution, config.width, cands, mode,
                             seed=config.seed, sharing=config.sharing, zero_gamma=bool(config.zero_gamma))


def load_block_latency(config: GradientSearchConfig, net: Any, num_classes: int, in_channels: int,
                       progress: Callable[[str], None] | None = None) -> BlockLatency | None:
    """The per-block latency table of the search's skeleton (``None`` without a target).

    ``cpu``: the layer-wise table of the space measured on this machine, built once and cached as
    ``CACHE/lut_<space>_<backend>_<threads>t_<classes>c.json`` (``edgenas latency profile``'s format);
    ``lut:PATH``: a given table.
    """
    if not config.target:
        return None
    from edgenas.hardware.lut import LatencyTable

    if not hasattr(net, "zero_slots"):
        raise EdgenasError(f"a latency target needs an MBV3-style space (layer tables); '{config.space}' is not one")
    if config.target == "cpu":
        from edgenas.hardware.lut import profile_lut
        from edgenas.hardware.measure import MeasureSettings

        cache = Path(config.cache_dir or Path(config.out) / "cache")
        path = cache / f"lut_{net.space.name}_{config.backend}_{config.threads}t_{num_classes}c.json"
        if not path.exists():
            if progress:
                progress(f"profiling the layer latency table of {net.space.name} on this CPU -> {path}")
            cache.mkdir(parents=True, exist_ok=True)
            profile_lut(net.space, path, MeasureSettings(backend=config.backend, threads=config.threads),
                        num_classes, in_channels)
        table = LatencyTable.load(path)
    else:
        table = LatencyTable.load(config.target[4:])
    model = table.bind(net.space, num_classes, in_channels)
    return BlockLatency.from_lut(model, net.resolution, net.width, net.candidates, net.zero_slots)


# ----------------------------------------------------------------------------------------- the loop
class GradientSearch:
    """One search (see the module docstring): ``start(resume)``, then ``run()``."""

    def __init__(self, config: GradientSearchConfig, progress: ProgressFn | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        from edgenas.data import load_dataset
        from edgenas.spaces import get_space

        config.validate()
        self.config, self.progress, self.log = config, progress, log or (lambda s: None)
        self.out = Path(config.out)
        self.space = get_space(config.space)
        data = load_dataset(config.data)
        if config.max_train:
            data = data.subset(config.max_train)
        self.data = data
        torch.set_num_threads(config.threads)
        self.net = build_network(config, self.space, data.num_classes, data.in_channels)
        self.latency = load_block_latency(config, self.net, data.num_classes, data.in_channels, self.log)
        if self.latency is not None:
            self.latency.check_target(float(config.latency_ms),
                                      f" at resolution {self.net.resolution}, width {self.net.width}")
        x_train, x_val = data.at_resolution(self.net.resolution)
        n = len(x_train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
        n_arch = max(config.batch_size, int(round(n * config.arch_fraction)))
        if n - n_arch < config.batch_size:
            raise EdgenasError(f"{n} training images are too few for --batch-size {config.batch_size} with "
                               f"--arch-fraction {config.arch_fraction}")
        wi, ai = order[n_arch:], order[:n_arch]
        self.xw, self.yw = x_train[wi], data.y_train[wi]
        self.xa, self.ya = x_train[ai], data.y_train[ai]
        m = min(len(x_val), config.max_eval)
        self.xv, self.yv = x_val[:m], data.y_val[:m]
        self.steps_per_epoch = math.ceil(len(self.xw) / config.batch_size)
        total = config.epochs * self.steps_per_epoch
        decay = [p for p in self.net.weight_parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.weight_parameters() if p.ndim <= 1]
        self.w_opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, momentum=0.9, nesterov=True)
        self.w_sched = torch.optim.lr_scheduler.LambdaLR(
            self.w_opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        # ProxylessNAS's Adam for alpha: no first moment (beta1 = 0), as in its released settings.
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=config.arch_lr, betas=(0.0, 0.999), eps=1e-8)
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        self.coef = float(config.lam if config.loss == "additive" else config.beta)
        self.epoch = 0
        self.history: dict[str, Any] = {"epochs": [], "alpha": [], "steps": []}
        self.seconds = 0.0
        self.selection: list[dict[str, Any]] = []  # derive="select": the scored candidates

    # ------------------------------------------------------------- checkpoint
    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def start(self, resume: bool = False) -> None:
        cfg_path = self.out / "search.json"
        if (self.out / "arch.json").exists() and not resume:
            raise EdgenasError(f"'{self.out}' already holds a finished search; choose another --out")
        if self.ckpt_path.exists():
            if not resume:
                raise EdgenasError(f"'{self.out}' holds an interrupted search; pass --resume to continue it "
                                   f"or choose another --out")
            stored = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
            mine = self.config.to_json()
            # keys older searches did not store take the defaults of their method
            defaults = GradientSearchConfig(out=self.config.out, method=stored.get("method", "proxyless")).to_json()
            for k, before in INIT_ONLY.items():
                setattr(self.config, k, stored.get(k, before))
            differ = [k for k in mine if k not in ("out", "epochs", "cache_dir", "plots", *DERIVATION_ONLY, *INIT_ONLY)
                      and stored.get(k, defaults[k]) != mine[k]]
            if differ:
                k = differ[0]
                raise EdgenasError(f"--resume with a different {k} ({mine[k]!r}) than the stored search "
                                   f"({stored.get(k)!r}); resume with the same settings")
            self._load_checkpoint()
        elif self.config.init_weights:
            self._load_init_weights(Path(self.config.init_weights))
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_path, self.config.to_json())

    def _save_checkpoint(self) -> None:
        state = {
            "net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
            "w_sched": self.w_sched.state_dict(), "gen": self.gen.get_state(), "coef": self.coef,
            "epoch": self.epoch, "seconds": self.seconds, "history": json.dumps(self.history),
        }
        save_checkpoint(self.ckpt_path, state)

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state["net"])
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
            self.w_sched.load_state_dict(state["w_sched"])
        except (RuntimeError, KeyError, ValueError, EOFError) as exc:
            raise EdgenasError(f"checkpoint '{self.ckpt_path}' cannot be read ({type(exc).__name__}); "
                               f"move it away to start afresh") from None
        self.gen.set_state(state["gen"])
        self.coef, self.epoch, self.seconds = float(state["coef"]), int(state["epoch"]), float(state["seconds"])
        self.history = json.loads(state["history"])
        self.log(f"resumed from {self.ckpt_path} after epoch {self.epoch}")

    def _load_init_weights(self, source: Path) -> None:
        """Start from the network weights of an earlier search (not its alpha, optimisers or schedule).

        Several latency targets can so share one warm-up: ProxylessNAS trains the weights alone before the
        architecture steps begin (Cai et al., ICLR 2019); a weight-only run (``--warmup-epochs``
        equal to ``--epochs``) trained once serves every target's search.
        """
        ckpt = source / "checkpoint.pt" if source.is_dir() else source
        if not ckpt.is_file():
            raise EdgenasError(f"--init-weights '{source}' holds no checkpoint.pt; pass the --out folder of an "
                               f"earlier search")
        stored_path = ckpt.parent / "search.json"
        stored = json.loads(stored_path.read_text()) if stored_path.exists() else {}
        mine = self.config.to_json()
        for key in ("method", "space", "sharing", "candidates", "nb201_channels", "nb201_cells"):
            if key in stored and stored[key] != mine[key]:
                raise EdgenasError(f"--init-weights '{source}' was searched with {key} {stored[key]!r}, this search "
                                   f"has {mine[key]!r}; start from a search of the same network")
        arch_ids = {id(p) for p in self.net.arch_parameters()}
        arch_names = {n for n, p in self.net.named_parameters() if id(p) in arch_ids}
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)["net"]
            weights = {k: v for k, v in state.items() if k not in arch_names}
            missing = [k for k in self.net.load_state_dict(weights, strict=False).missing_keys
                       if k not in arch_names]
        except (RuntimeError, KeyError, ValueError, EOFError) as exc:
            raise EdgenasError(f"--init-weights '{ckpt}' does not fit this network ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:120]}); start from a search of the same space, "
                               f"data and candidates") from None
        if missing:
            raise EdgenasError(f"--init-weights '{ckpt}' lacks {len(missing)} of this network's weights (first: "
                               f"{missing[0]}); start from a search of the same space and candidates")
        self.log(f"weights initialised from {ckpt}")

    # -------------------------------------------------------------------- steps
    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        self.net.prepare("weight", self.gen)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.w_opt.step()
        self.w_sched.step()
        return loss.item(), float((logits.argmax(1) == y).float().mean())

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        self.net.prepare("arch", self.gen)
        ce = F.cross_entropy(self.net(x), y)
        row = {"ce": ce.item()}
        loss = ce
        if self.latency is not None:
            exp_lat = self.latency.expected(self.net.probs())
            lam, beta = (self.coef, cfg.beta) if cfg.loss == "additive" else (cfg.lam, self.coef)
            loss = latency_loss(ce, exp_lat, float(cfg.latency_ms), cfg.loss, lam, beta)
            row["expected_ms"] = exp_lat.item()
        self.a_opt.zero_grad(set_to_none=True)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.net.before_arch_update()
        self.a_opt.step()
        self.net.after_arch_update()
        if self.latency is not None and cfg.adapt > 0:
            self.coef += cfg.adapt * (row["expected_ms"] / float(cfg.latency_ms) - 1.0)
            if cfg.constraint == "at-most":
                self.coef = max(0.0, self.coef)
        row["coef"] = self.coef
        return row

    # --------------------------------------------------------------------- run
    def run(self) -> GradientSearchResult:
        cfg = self.config
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            order = torch.randperm(len(self.xw), generator=self.gen)
            a_order = torch.randperm(len(self.xa), generator=self.gen)
            searching = self.epoch >= cfg.warmup_epochs
            losses, accs, arch_rows = [], [], []
            self.net.train()
            # Dropout draws from the global generator: seed it per epoch, so a resumed search repeats exactly.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed * 100003 + self.epoch)
                self._epoch(order, a_order, searching, losses, accs, arch_rows)
            choice = self.derive_choice("window" if cfg.derive == "select" else None)  # select: at the end only
            row = {
                "epoch": self.epoch + 1, "train_loss": float(np.mean(losses)), "train_acc": 100 * float(np.mean(accs)),
                "val_acc": self.evaluate(choice), "searching": searching, "seconds": time.perf_counter() - t0,
                "entropy": float(np.mean([_entropy(p) for p in self.net.probs()])),
            }
            if arch_rows:
                row["arch_ce"] = float(np.mean([r["ce"] for r in arch_rows]))
                row["coef"] = self.coef
            if self.latency is not None:
                row["expected_ms"] = self.latency.expected(self.net.probs()).item()
                row["derived_ms"] = self.latency.of_choice(choice)
            self.history["epochs"].append(row)
            self.seconds += row["seconds"]
            self.epoch += 1
            self._save_checkpoint()
            self.log(_epoch_line(row))
        return self.finish()

    def _epoch(self, order: torch.Tensor, a_order: torch.Tensor, searching: bool, losses: list[float],
               accs: list[float], arch_rows: list[dict[str, float]]) -> None:
        cfg, bs, a_pos = self.config, self.config.batch_size, 0
        total_steps = cfg.epochs * self.steps_per_epoch
        for s in range(self.steps_per_epoch):
            idx = order[s * bs : (s + 1) * bs]
            if len(idx) < 2:
                continue
            loss, acc = self._weight_step(self.xw[idx], self.yw[idx])
            losses.append(loss)
            accs.append(acc)
            if searching and s % cfg.arch_every == cfg.arch_every - 1:
                if a_pos + bs > len(a_order):
                    a_order, a_pos = torch.randperm(len(self.xa), generator=self.gen), 0
                aidx = a_order[a_pos : a_pos + bs]
                a_pos += bs
                arch_rows.append(self._arch_step(self.xa[aidx], self.ya[aidx]))
                if len(arch_rows) % 5 == 1:
                    self.history["alpha"].append(
                        {"epoch": self.epoch + s / self.steps_per_epoch,
                         "probs": [p.detach().tolist() for p in self.net.probs()],
                         **arch_rows[-1]})
            if self.progress:
                done = self.epoch * self.steps_per_epoch + s + 1
                self.progress(done, total_steps, {"loss": float(np.mean(losses[-20:])), "epoch": self.epoch + 1,
                                                  **(arch_rows[-1] if arch_rows else {})})

    # ------------------------------------------------------------------ derive
    def derive_choice(self, how: str | None = None) -> list[int]:
        how = how or self.config.derive
        if how == "select":
            return self.select_choice()
        argmax = self.net.argmax_choice()
        if how == "argmax" or self.latency is None:
            return argmax
        target = float(self.config.latency_ms)
        w = self.config.window
        ceiling, floor = (target * (1 + w), target * (1 - w)) if how == "window" else (target, None)
        if floor is None and self.latency.of_choice(argmax) <= target:
            return argmax
        logp = [torch.log_softmax(a.detach().double(), 0).numpy() for a in self.net.arch_parameters()]
        best = most_probable_under(logp, self.latency, ceiling, floor_ms=floor)
        if best is None:
            best = most_probable_under(logp, self.latency, ceiling)
        return best if best is not None else argmax

    def selection_candidates(self) -> list[list[int]]:
        """The window's (or, without a latency target, the argmax) choice and up to ``select_from - 1`` others
        drawn from ``alpha``'s distribution by perturb-and-MAP (seeded): Gumbel noise on each block's ``log p``,
        then the most probable choice in the window (or below its ceiling when none lies in it)."""
        cfg = self.config
        logp = [torch.log_softmax(a.detach().double(), 0).numpy() for a in self.net.arch_parameters()]
        first = self.derive_choice("window") if self.latency is not None else self.net.argmax_choice()
        found = [first]
        rng = np.random.default_rng(cfg.seed + 7919)
        for _ in range(4 * cfg.select_from):
            if len(found) >= cfg.select_from:
                break
            noisy = [lp + rng.gumbel(size=lp.shape) for lp in logp]
            if self.latency is None:
                choice = [int(np.argmax(v)) for v in noisy]
            else:
                target = float(cfg.latency_ms)
                ceiling, floor = target * (1 + cfg.window), target * (1 - cfg.window)
                choice = (most_probable_under(noisy, self.latency, ceiling, floor_ms=floor)
                          or most_probable_under(noisy, self.latency, ceiling))
            if choice is not None and choice not in found:
                found.append(choice)
        return found

    def select_choice(self) -> list[int]:
        """``derive="select"``: the candidate of :meth:`selection_candidates` most accurate with the supernet's
        weights on the architecture split; every candidate's score is kept in ``self.selection``."""
        cands = self.selection_candidates()
        scores = [self.evaluate(c, self.xa, self.ya) for c in cands]
        self.selection = [{"arch": self.net.arch_of(c), "arch_split_accuracy": s,
                           **({"latency_ms": self.latency.of_choice(c)} if self.latency is not None else {})}
                          for c, s in zip(cands, scores, strict=True)]
        return cands[int(np.argmax(scores))]

    @torch.no_grad()
    def evaluate(self, choice: list[int], images: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> float:
        """Validation accuracy (%) of the network of ``choice`` with the supernet's weights (or its accuracy on
        ``images`` / ``labels``, e.g. the architecture split).

        With nested weight sharing the batch-norm statistics of a slot's elastic block mix every
        candidate's, so the path is extracted and its statistics recomputed on up to ``max_eval`` training
        images first (Once-for-All's BN recalibration); with separate weights each candidate keeps its own.
        """
        if getattr(self.net, "sharing", "none") == "nested":
            from edgenas.supernets.bn_calibration import recalibrate_bn

            model = recalibrate_bn(self.net.extract(self.net.arch_of(choice)), self.xw[: self.config.max_eval])
        else:
            self.net.fix(choice)
            model = self.net.eval()
        x, y = (self.xv, self.yv) if images is None else (images, labels)
        correct = 0
        for i in range(0, len(x), 256):
            correct += int((model(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum())
        self.net.train()
        return 100.0 * correct / max(1, len(x))

    def finish(self) -> GradientSearchResult:
        cfg = self.config
        choice = self.derive_choice()
        arch = self.net.arch_of(choice)
        argmax = self.net.argmax_choice()
        metrics: dict[str, float] = {"accuracy": self.evaluate(choice), "search_seconds": self.seconds}
        extra: dict[str, Any] = {"argmax_arch": self.net.arch_of(argmax)}
        if cfg.derive == "select":
            extra["selection"] = self.selection
            extra["selection_is"] = ("candidates scored with the supernet's weights on the architecture split "
                                     "(batch norm recalibrated); the best is the derived architecture")
        if self.latency is not None:
            metrics["latency"] = self.latency.of_choice(choice)
            metrics["expected_latency"] = self.latency.expected(self.net.probs()).item()
            extra["argmax_latency_ms"] = self.latency.of_choice(argmax)
            extra["latency_target_ms"] = float(cfg.latency_ms)
            extra["latency_source"] = self.latency.source
        blob = {
            "space": cfg.space, "method": cfg.method, "arch": arch, "metrics": metrics,
            "derived_by": cfg.derive if self.latency is not None or cfg.derive == "select" else "argmax", **extra,
            "accuracy_is": "validation accuracy of the derived network with the supernet's weights (not retrained)",
            "probs": {n: dict(zip(c, [round(v, 5) for v in p.detach().tolist()], strict=True))
                      for n, c, p in zip(self.net.block_names(), self.net.candidate_names(), self.net.probs(),
                                         strict=True)},
            "machine": machine_info(),
        }
        self._keep_earlier_derivation(arch)
        self._write_store(arch, metrics)
        atomic_write_json(self.out / "history.json", self.history)
        if cfg.plots:
            plot_history(self.history, self.net.block_names(), self.net.candidate_names(), self.out,
                         cfg.latency_ms if self.latency is not None else None)
        atomic_write_json(self.out / "arch.json", blob)
        return GradientSearchResult(self.out, arch, metrics, self.seconds, self.history)

    def _keep_earlier_derivation(self, arch: dict[str, Any]) -> None:
        """A finished search derived again (``--resume --derive X``): when the architecture changes, the earlier
        ``arch.json`` is kept as ``arch.<its derivation>.json`` and the one-trial store starts afresh."""
        earlier = self.out / "arch.json"
        if not earlier.exists():
            return
        blob = json.loads(earlier.read_text())
        if blob.get("arch") == arch:
            return
        atomic_write_json(self.out / f"arch.{blob.get('derived_by', 'earlier')}.json", blob)
        for name in ("study.db", "trials.csv", "pareto.json"):
            (self.out / name).unlink(missing_ok=True)
        self.log(f"derived again: the earlier architecture is kept as arch.{blob.get('derived_by', 'earlier')}.json")

    def _write_store(self, arch: dict[str, Any], metrics: dict[str, float]) -> None:
        """An experiment store with the derived architecture as its one trial (what ``edgenas export`` reads)."""
        from edgenas.experiment import ExperimentConfig
        from edgenas.store import TrialStore, write_pareto_json, write_trials_csv

        cfg = self.config
        objectives = ["accuracy", "latency"] if "latency" in metrics else ["accuracy"]
        econf = ExperimentConfig(
            out=str(self.out), space=cfg.space, data=cfg.data, estimator="train", target=cfg.target,
            strategy=cfg.method, budget=1, objectives=objectives,
            constraints={"latency": float(cfg.latency_ms)} if cfg.latency_ms else {},
            seed=cfg.seed, epochs=cfg.retrain_epochs, max_train=cfg.max_train, keep_weights=False,
            cache_dir=cfg.cache_dir, threads=cfg.threads, backend=cfg.backend,
        )
        atomic_write_json(self.out / "config.json", econf.to_json())
        store = TrialStore(self.out, ["maximize"] + ["minimize"] * (len(objectives) - 1))
        if not store.records():
            stored = {k: v for k, v in metrics.items() if k in ("accuracy", "latency")}
            store.add(self.space, arch, stored, True, objectives, self.seconds)
        records = store.records()
        dirs = [(o, "maximize" if o == "accuracy" else "minimize") for o in objectives]
        write_trials_csv(self.out / "trials.csv", records)
        write_pareto_json(self.out / "pareto.json", records, dirs, econf.constraints)


def _entropy(p: torch.Tensor) -> float:
    p = p.detach().clamp_min(1e-12)
    return float(-(p * p.log()).sum())


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.3f}", f"val acc {row['val_acc']:.1f}%",
             f"entropy {row['entropy']:.3f}", f"{row['seconds']:.0f} s"]
    if "expected_ms" in row:
        parts.append(f"E[lat] {row['expected_ms']:.4f} ms, derived {row['derived_ms']:.4f} ms")
    if "coef" in row:
        parts.append(f"coef {row['coef']:.3f}")
    return ", ".join(parts)


def plot_history(history: dict[str, Any], blocks: list[str], candidates: list[list[str]], out: Path,
                 target_ms: float | None = None) -> None:
    """``alpha.png`` (each block's path probabilities over the search) and ``curves.png`` (losses,
    accuracy, expected latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgenas.io import atomic_write_bytes

    def save(fig: Any, path: Path) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())

    snaps = history.get("alpha", [])
    n = len(blocks)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), squeeze=False, sharex=True, sharey=True)
    xs = [s["epoch"] for s in snaps]
    for b in range(rows * cols):
        ax = axes[b // cols][b % cols]
        if b >= n:
            ax.axis("off")
            continue
        for j, name in enumerate(candidates[b]):
            ax.plot(xs, [s["probs"][b][j] for s in snaps], lw=1, label=name)
        ax.set_title(blocks[b], fontsize=8)
        ax.tick_params(labelsize=7)
    widest = max(range(n), key=lambda b: len(candidates[b])) if n else 0
    handles, labels = axes[widest // cols][widest % cols].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(10, len(labels)), fontsize=7)
    fig.supxlabel("epoch")
    fig.supylabel("path probability")
    save(fig, out / "alpha.png")

    ep = history.get("epochs", [])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    e = [r["epoch"] for r in ep]
    axes[0].plot(e, [r["train_loss"] for r in ep], "o-", label="train CE (weights)")
    axes[0].plot([r["epoch"] for r in ep if "arch_ce" in r], [r["arch_ce"] for r in ep if "arch_ce" in r], "s-",
                 label="validation CE (alpha)")
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[1].plot(e, [r["train_acc"] for r in ep], "o-", label="train (sampled paths)")
    axes[1].plot(e, [r["val_acc"] for r in ep], "s-", label="validation (derived arch)")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7)
    lat = [s for s in snaps if "expected_ms" in s]
    if lat:
        axes[2].plot([s["epoch"] for s in lat], [s["expected_ms"] for s in lat], lw=1, label="E[lat]")
        axes[2].plot([r["epoch"] for r in ep if "derived_ms" in r], [r["derived_ms"] for r in ep if "derived_ms" in r],
                     "s", label="derived arch (table)")
        if target_ms:
            axes[2].axhline(target_ms, ls="--", c="#d64545", lw=1, label="target")
        axes[2].set_ylabel("latency (ms)")
        axes[2].legend(fontsize=7)
    else:
        axes[2].plot(e, [r["entropy"] for r in ep], "o-")
        axes[2].set_ylabel("mean alpha entropy (nats)")
    axes[2].set_xlabel("epoch")
    save(fig, out / "curves.png")


def run_search(config: GradientSearchConfig, progress: ProgressFn | None = None, resume: bool = False,
               log: Callable[[str], None] | None = None) -> GradientSearchResult:
    """Set up, (resume and) run a ProxylessNAS or DARTS search; see the module docstring."""
    search = GradientSearch(config, progress, log)
    search.start(resume)
    return search.run()
