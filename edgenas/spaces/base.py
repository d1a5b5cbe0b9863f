"""The generic search space: named categorical dimensions plus a build function.

Every space of edgenas (and any space a user writes in their own module) is a :class:`SearchSpace`: an
ordered list of :class:`Dimension` objects, an optional rule that says which dimensions are *active*
given the choices made before them (e.g. the kernel of block 4 of a stage only matters when the stage's
depth is 4), and the dotted path of a build function ``(space, arch, num_classes, in_channels, seed) ->
nn.Module``. The space itself never imports torch.

An architecture is a plain ``dict`` mapping dimension name to choice. Its *canonical* form fills every
inactive dimension with that dimension's first choice, so two architectures that build the same network
have the same key.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgenas.errors import InvalidArchitecture

Arch = dict[str, Any]
Choice = int | float | str | bool


@dataclass(frozen=True)
class Dimension:
    """One named categorical decision of a search space.

    ``label`` is how error messages name it (e.g. ``"stage 3 depth"``); ``ordered`` says the choices
    have a natural order (depths, kernels), which mutation and encoding may use.
    """

    name: str
    choices: tuple[Choice, ...]
    label: str = ""
    ordered: bool = True

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"dimension '{self.name}' has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"dimension '{self.name}' has repeated choices {self.choices}")
        for c in self.choices:
            if not isinstance(c, int | float | str | bool):
                raise ValueError(f"dimension '{self.name}': choice {c!r} is not an int, float, str or bool")

    @property
    def display(self) -> str:
        return self.label or self.name

    def index(self, value: Any) -> int:
        """The position of ``value`` among the choices (accepting 3 for 3.0 and vice versa)."""
        for i, c in enumerate(self.choices):
            if c == value and (isinstance(c, str) == isinstance(value, str)):
                return i
        allowed = "{" + ", ".join(str(c) for c in self.choices) + "}"
        raise InvalidArchitecture(f"{self.display} {value!r} not in {allowed}")


ActiveRule = Callable[[str, Mapping[str, Any]], bool]


def _always_active(name: str, partial: Mapping[str, Any]) -> bool:
    return True


@dataclass
class SearchSpace:
    """A search space of named categorical dimensions (see the module docstring).

    Parameters
    ----------
    name: the registry name (``mbv3-tiny``).
    dimensions: the decisions, in an order where every dimension's activity depends only on earlier ones.
    builder: dotted path ``"module:function"`` of the build function; imported lazily so that the space
        stays torch-free.
    is_active: ``(dimension name, partial arch) -> bool``.
    default_resolution: input resolution when the space has no ``resolution`` dimension.
    description: one line for ``edgenas spaces``.
    """

    name: str
    dimensions: Sequence[Dimension]
    builder: str = ""
    is_active: ActiveRule = _always_active
    default_resolution: int = 32
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    counter: Callable[[], int] | None = None
    ref: str = ""  # how get_space() found it ("mbv3-tiny", "my_module:MySpace"), for worker processes

    def __post_init__(self) -> None:
        self.dimensions = tuple(self.dimensions)
        self._by_name = {d.name: d for d in self.dimensions}
        if len(self._by_name) != len(self.dimensions):
            raise ValueError(f"space '{self.name}' has repeated dimension names")
        # Offsets of each dimension in the one-hot encoding.
        self._offsets: dict[str, int] = {}
        offset = 0
        for d in self.dimensions:
            self._offsets[d.name] = offset
            offset += len(d.choices)
        self.encoding_size = offset

    # ------------------------------------------------------------------ basics
    def __getitem__(self, name: str) -> Dimension:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def active_names(self, arch: Mapping[str, Any]) -> list[str]:
        """The dimensions that matter for ``arch``."""
        return [d.name for d in self.dimensions if self.is_active(d.name, arch)]

    def size(self) -> int:
        """The number of distinct (canonical) architectures, counted exactly.

        Without an activity rule it is the product of the choice counts; with one, the space's
        ``counter`` gives it in closed form, or (small spaces) it is counted by enumeration.
        """
        if self.counter is not None:
            return self.counter()
        if self.is_active is _always_active:
            return math.prod(len(d.choices) for d in self.dimensions)
        return sum(1 for _ in self._walk())

    # ------------------------------------------------------------ validation
    def validate(self, arch: Mapping[str, Any]) -> Arch:
        """Check ``arch`` and return its canonical form; raise :class:`InvalidArchitecture` if wrong.

        Missing active dimensions and unknown keys are errors; inactive dimensions may be omitted.
        """
        if not isinstance(arch, Mapping):
            raise InvalidArchitecture(
                f"an architecture of space '{self.name}' is a JSON object of dimension: choice, "
                f"not {type(arch).__name__}"
            )
        unknown = [k for k in arch if k not in self._by_name]
        if unknown:
            raise InvalidArchitecture(
                f"unknown dimension '{unknown[0]}' for space '{self.name}' "
                f"(its dimensions look like: {', '.join(self.names[:4])}, ...)"
            )
        out: Arch = {}
        for d in self.dimensions:
            if self.is_active(d.name, out):
                if d.name not in arch:
                    raise InvalidArchitecture(f"{d.display} is missing (dimension '{d.name}')")
                out[d.name] = d.choices[d.index(arch[d.name])]
            else:
                out[d.name] = d.choices[0]
        return out

    def canonical(self, arch: Mapping[str, Any]) -> Arch:
        return self.validate(arch)

    def key(self, arch: Mapping[str, Any]) -> str:
        """A string that identifies the network ``arch`` builds (inactive choices ignored)."""
        canon = self.validate(arch)
        return json.dumps({k: canon[k] for k in self.active_names(canon)}, sort_keys=True)

    # --------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random choice per dimension (inactive ones canonical)."""
        arch: Arch = {}
        for d in self.dimensions:
            if self.is_active(d.name, arch):
                arch[d.name] = d.choices[int(rng.integers(len(d.choices)))]
            else:
                arch[d.name] = d.choices[0]
        return arch

    def mutate(self, arch: Mapping[str, Any], rng: np.random.Generator, prob: float | None = None) -> Arch:
        """Resample each active dimension with probability ``prob`` (default 1/#active); always change
        at least one dimension, so the child differs from the parent whenever the space allows."""
        parent = self.validate(arch)
        active = self.active_names(parent)
        if prob is None:
            prob = 1.0 / max(1, len(active))
        changeable = [n for n in active if len(self[n].choices) > 1]
        forced = changeable[int(rng.integers(len(changeable)))] if changeable else None
        child: Arch = {}
        for d in self.dimensions:
            value = parent[d.name]
            if self.is_active(d.name, child):
                if d.name == forced:
                    others = [c for c in d.choices if c != value]
                    value = others[int(rng.integers(len(others)))]
                elif rng.random() < prob:
                    value = d.choices[int(rng.integers(len(d.choices)))]
                # A dimension that became active through a changed parent keeps the parent's value.
            else:
                value = d.choices[0]
            child[d.name] = value
        return child

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: np.random.Generator) -> Arch:
        """Uniform crossover: each dimension from either parent with equal probability."""
        a, b = self.validate(a), self.validate(b)
        child: Arch = {}
        for d in self.dimensions:
            if self.is_active(d.name, child):
                child[d.name] = a[d.name] if rng.random() < 0.5 else b[d.name]
            else:
                child[d.name] = d.choices[0]
        return child

    def neighbours(self, arch: Mapping[str, Any]) -> list[Arch]:
        """Every architecture that differs from ``arch`` in exactly one active dimension."""
        base = self.validate(arch)
        out = []
        for name in self.active_names(base):
            for c in self[name].choices:
                if c != base[name]:
                    out.append(self.validate({**base, name: c}))
        return out

    def extreme(self, smallest: bool = True) -> Arch:
        """The architecture with every ordered dimension at its first (or last) choice."""
        arch: Arch = {}
        for d in self.dimensions:
            pick = 0 if smallest or not self.is_active(d.name, arch) else len(d.choices) - 1
            arch[d.name] = d.choices[pick]
        return arch

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Arch]:
        """Every canonical architecture, in a fixed order (for grid search over small spaces)."""
        yield from itertools.islice(self._walk(), limit)

    def _walk(self) -> Iterator[Arch]:
        def rec(i: int, partial: Arch) -> Iterator[Arch]:
            if i == len(self.dimensions):
                yield dict(partial)
                return
            d = self.dimensions[i]
            options = d.choices if self.is_active(d.name, partial) else d.choices[:1]
            for c in options:
                partial[d.name] = c
                yield from rec(i + 1, partial)
            del partial[d.name]

        yield from rec(0, {})

    # --------------------------------------------------------------- encoding
    def encode(self, arch: Mapping[str, Any]) -> np.ndarray:
        """One-hot feature vector; inactive dimensions are all zeros."""
        return self.encode_batch([arch])[0]

    def encode_batch(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.zeros((len(archs), self.encoding_size), dtype=np.float32)
        for row, arch in enumerate(archs):
            canon = self.validate(arch)
            for name in self.active_names(canon):
                out[row, self._offsets[name] + self[name].index(canon[name])] = 1.0
        return out

    def decode(self, vector: Sequence[float]) -> Arch:
        """Inverse of :meth:`encode` (argmax per dimension; all-zero blocks decode to the first choice)."""
        vector = np.asarray(vector)
        if vector.shape != (self.encoding_size,):
            raise InvalidArchitecture(
                f"an encoding of space '{self.name}' has {self.encoding_size} entries, got {vector.shape}"
            )
        arch: Arch = {}
        for d in self.dimensions:
            block = vector[self._offsets[d.name] : self._offsets[d.name] + len(d.choices)]
            arch[d.name] = d.choices[int(np.argmax(block))]
        return self.validate(arch)

    def to_index(self, arch: Mapping[str, Any]) -> list[int]:
        canon = self.validate(arch)
        return [self[n].index(canon[n]) for n in self.names]

    # ------------------------------------------------------------- optuna glue
    def suggest(self, trial: Any) -> Arch:
        """Ask an Optuna trial for every active dimension (define-by-run, conditional dimensions)."""
        arch: Arch = {}
        for d in self.dimensions:
            if self.is_active(d.name, arch):
                arch[d.name] = trial.suggest_categorical(d.name, list(d.choices))
            else:
                arch[d.name] = d.choices[0]
        return arch

    def distributions(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna distributions of the active dimensions of ``arch`` (for recording finished trials)."""
        from optuna.distributions import CategoricalDistribution

        return {n: CategoricalDistribution(list(self[n].choices)) for n in self.active_names(arch)}

    # ------------------------------------------------------------------- misc
    def resolution(self, arch: Mapping[str, Any]) -> int:
        return int(arch.get("resolution", self.default_resolution))

    def build(self, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3, seed: int = 0) -> Any:
        """Build the ``torch.nn.Module`` of ``arch`` by calling the space's build function."""
        if not self.builder:
            raise InvalidArchitecture(f"space '{self.name}' has no build function")
        module_name, _, func_name = self.builder.partition(":")
        build = getattr(importlib.import_module(module_name), func_name)
        return build(self, self.validate(arch), num_classes=num_classes, in_channels=in_channels, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (name, config, dimensions) used to check checkpoints."""
        return {
            "name": self.name,
            "config": self.config,
            "dimensions": {d.name: list(d.choices) for d in self.dimensions},
        }

    def describe(self) -> str:
        return self.description or self.name
