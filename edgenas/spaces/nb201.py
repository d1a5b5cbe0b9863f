"""The NAS-Bench-201 cell-level search space.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search" (ICLR 2020).
A cell is a DAG of 4 nodes; node ``j`` sums one operation applied to every earlier node ``i < j``, so the
cell has 6 edges, and each edge is one of 5 operations::

    none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3

which makes 5**6 = 15,625 architectures (the benchmark tabulates all of them, isomorphic ones included,
so every dimension is always active). The network stacks the same cell 3 x N times (see
:mod:`edgenas.models.nb201`).

Dimension names are ``edge_{i}_{j}`` (from node ``i`` into node ``j``), in the order of NB201's string
form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: ``edge_0_1, edge_0_2, edge_1_2, edge_0_3, edge_1_3,
edge_2_3``. Besides the dict form, an architecture has

* its NB201 string (:meth:`NB201Space.to_string` / :meth:`NB201Space.from_string`), and
* its *code*, the integer ``sum(op_index(edge_k) * 5**k)`` in ``[0, 15625)``
  (:meth:`NB201Space.code`, vectorised in :meth:`NB201Space.codes`), which tabular look-ups use as an
  array index. It is not the benchmark's row ``index``; the table loader maps one onto the other.
"""

from __future__ import annotations

import difflib
import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgenas.errors import InvalidArchitecture
from edgenas.spaces.base import Arch, Dimension, SearchSpace

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
#: (source node, target node) of every edge, in the order of the NB201 string.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in range(1, NUM_NODES) for i in range(j))
EDGE_NAMES: tuple[str, ...] = tuple(f"edge_{i}_{j}" for i, j in EDGES)
NUM_ARCHS = len(OPS) ** len(EDGES)
_OP_INDEX = {op: k for k, op in enumerate(OPS)}
_WEIGHTS = np.array([len(OPS) ** k for k in range(len(EDGES))], dtype=np.int64)
_NAME_WEIGHTS = tuple(zip(EDGE_NAMES, _WEIGHTS.tolist(), strict=True))


@dataclass(frozen=True)
class NB201Config:
    """The fixed skeleton of the network: stem width ``channels`` and ``cells_per_stage`` cells per stage
    (NB201's C=16, N=5). The cell space is the same for every skeleton; the benchmark's tables are for
    the default one."""

    channels: int = 16
    cells_per_stage: int = 5

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NB201Space(SearchSpace):
    """The NB201 cell space (see the module docstring)."""

    nb201: NB201Config = field(default_factory=NB201Config)

    @classmethod
    def from_config(cls, name: str, cfg: NB201Config, description: str = "") -> NB201Space:
        dims = [
            Dimension(n, OPS, f"edge {i}->{j}", ordered=False)
            for n, (i, j) in zip(EDGE_NAMES, EDGES, strict=True)
        ]
        return cls(
            name=name,
            dimensions=dims,
            builder="edgenas.models.nb201:build_nb201",
            default_resolution=32,
            description=description,
            config=cfg.to_json(),
            nb201=cfg,
        )

    # ------------------------------------------------------------ string form
    def to_string(self, arch: Mapping[str, Any]) -> str:
        """The standard NB201 string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``."""
        canon = self.validate(arch)
        nodes = []
        for j in range(1, NUM_NODES):
            nodes.append("|" + "|".join(f"{canon[f'edge_{i}_{j}']}~{i}" for i in range(j)) + "|")
        return "+".join(nodes)

    def from_string(self, text: str) -> Arch:
        """Parse an NB201 string; a malformed one raises :class:`InvalidArchitecture` saying where."""
        return parse_nb201_string(text)

    # -------------------------------------------------------------- int codes
    def code(self, arch: Mapping[str, Any]) -> int:
        """The architecture's integer code in ``[0, 15625)`` (see the module docstring)."""
        return int(self.codes([arch])[0])

    def codes(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Integer codes of many architectures (int64 array); validates each one on the way."""
        out = np.empty(len(archs), dtype=np.int64)
        for row, arch in enumerate(archs):
            try:
                out[row] = sum(_OP_INDEX[arch[n]] * w for n, w in _NAME_WEIGHTS)
            except (KeyError, TypeError):  # a missing edge, an unknown op or not a mapping
                self.validate(arch)  # raises the precise error
                raise
            if len(arch) != len(EDGE_NAMES):
                self.validate(arch)
        return out

    def from_code(self, code: int) -> Arch:
        """Inverse of :meth:`code`."""
        code = int(code)
        if not 0 <= code < NUM_ARCHS:
            raise InvalidArchitecture(f"an NB201 code is in [0, {NUM_ARCHS}), got {code}")
        return {n: OPS[(code // w) % len(OPS)] for n, w in _NAME_WEIGHTS}

    def op_indices(self, codes: np.ndarray) -> np.ndarray:
        """``(n, 6)`` array of op indices (into :data:`OPS`) of each code."""
        codes = np.asarray(codes, dtype=np.int64)
        return (codes[:, None] // _WEIGHTS[None, :]) % len(OPS)

    # ------------------------------------------------------ surrogate hook
    def surrogate_features(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Features for model-based strategies: the one-hot ops of the 6 edges plus the *path encoding*
        of BANANAS (White et al., AAAI 2021), one indicator per input-to-output path of the cell and
        sequence of (non-``none``) ops along it: 4 + 2 x 16 + 64 = 100 path features."""
        return path_features(self.op_indices(self.codes(archs)))


def parse_nb201_string(text: str) -> Arch:
    """Parse the NB201 string form into an architecture dict (see :class:`NB201Space`).

    The inputs of a node may be listed in any order, but each earlier node exactly once. Errors name the
    node, the edge and the character position of the problem.
    """
    if not isinstance(text, str):
        raise InvalidArchitecture(f"an NB201 architecture string is text, not {type(text).__name__}")
    s = text.strip()
    head = f"NB201 string '{_short(s)}'"
    if not s:
        raise InvalidArchitecture("empty NB201 string; expected e.g. |nor_conv_3x3~0|+|...|+|...|")
    groups = s.split("+")
    if len(groups) != NUM_NODES - 1:
        raise InvalidArchitecture(
            f"{head}: {len(groups)} node group(s) separated by '+', expected {NUM_NODES - 1} "
            f"(nodes 1, 2, 3)"
        )
    arch: Arch = {}
    pos = 0  # character offset of the current group in s
    for j, group in enumerate(groups, start=1):
        where = f"{head}, node {j} (character {pos + 1})"
        if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
            raise InvalidArchitecture(f"{where}: a node group is '|op~i|...|', starting and ending with '|'")
        tokens = group[1:-1].split("|")
        if len(tokens) != j:
            raise InvalidArchitecture(f"{where}: {len(tokens)} edge(s), expected {j} (one from each of nodes "
                                      f"{', '.join(str(i) for i in range(j))})")
        tok_pos = pos + 1
        for k, token in enumerate(tokens, start=1):
            at = f"{head}, node {j} edge {k} '{token}' (character {tok_pos + 1})"
            op, sep, src = token.partition("~")
            if not sep:
                raise InvalidArchitecture(f"{at}: an edge is 'op~input', e.g. 'nor_conv_3x3~0'")
            if op not in _OP_INDEX:
                close = difflib.get_close_matches(op, OPS, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise InvalidArchitecture(f"{at}: unknown op '{op}'; valid: {', '.join(OPS)}{hint}")
            if not src.isdigit() or int(src) >= j:
                raise InvalidArchitecture(f"{at}: input '{src}' must be a node before node {j} "
                                          f"(0..{j - 1})")
            name = f"edge_{int(src)}_{j}"
            if name in arch:
                raise InvalidArchitecture(f"{at}: node {src} feeds node {j} twice")
            arch[name] = op
            tok_pos += len(token) + 1
        pos += len(group) + 1
    return {n: arch[n] for n in EDGE_NAMES}


#: The cell's input-to-output paths, as lists of edge positions (0->3, 0->1->3, 0->2->3, 0->1->2->3).
PATHS: tuple[tuple[int, ...], ...] = tuple(
    tuple(EDGES.index(e) for e in path)
    for path in (((0, 3),), ((0, 1), (1, 3)), ((0, 2), (2, 3)), ((0, 1), (1, 2), (2, 3)))
)


def path_features(ops: np.ndarray) -> np.ndarray:
    """One-hot edge ops (30) and path-encoding indicators (100) of op-index rows ``ops`` (n x 6)."""
    ops = np.asarray(ops, dtype=np.int64)
    n = len(ops)
    onehot = np.zeros((n, len(EDGES) * len(OPS)))
    onehot[np.arange(n)[:, None], np.arange(len(EDGES)) * len(OPS) + ops] = 1.0
    blocks = [onehot]
    live = len(OPS) - 1  # ops other than none
    for path in PATHS:
        block = np.zeros((n, live ** len(path)))
        ok = np.all(ops[:, path] > 0, axis=1)
        index = np.zeros(n, dtype=np.int64)
        for edge in path:
            index = index * live + np.maximum(ops[:, edge] - 1, 0)
        block[np.flatnonzero(ok), index[ok]] = 1.0
        blocks.append(block)
    return np.hstack(blocks)


@functools.cache
def _string_codes() -> dict[str, int]:
    """Every canonical NB201 string -> its code (built once; makes parsing a table fast)."""
    out = {}
    for code, ops in enumerate(itertools.product(OPS, repeat=len(EDGES))):
        op = ops[::-1]  # product() varies the last position fastest; a code's lowest digit is edge 0->1
        out[f"|{op[0]}~0|+|{op[1]}~0|{op[2]}~1|+|{op[3]}~0|{op[4]}~1|{op[5]}~2|"] = code
    return out


def nb201_string_code(text: str) -> int:
    """The code of an NB201 string (fast for canonical strings; others are parsed, with clear errors)."""
    code = _string_codes().get(text) if isinstance(text, str) else None
    if code is None:
        arch = parse_nb201_string(text)
        code = sum(_OP_INDEX[arch[n]] * w for n, w in _NAME_WEIGHTS)
    return code


def nb201_param_count(
    arch: Mapping[str, Any], num_classes: int = 10, in_channels: int = 3, cfg: NB201Config | None = None
) -> int:
    """The parameter count of the NB201 network of ``arch`` in closed form (torch-free; equals the count of
    :func:`edgenas.models.nb201.build_nb201`'s model, see that module for the rules)."""
    cfg = cfg or NB201Config()
    c, n = cfg.channels, cfg.cells_per_stage

    def conv_bn(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + 2 * cout

    total = in_channels * c * 9 + 2 * c  # stem conv + BN
    for stage, width in enumerate((c, 2 * c, 4 * c)):
        if stage > 0:
            half = width // 2
            total += conv_bn(half, width, 3) + conv_bn(width, width, 3) + half * width
        per_cell = 0
        for i, j in EDGES:
            op = arch[f"edge_{i}_{j}"]
            if op == "nor_conv_1x1":
                per_cell += conv_bn(width, width, 1)
            elif op == "nor_conv_3x3":
                per_cell += conv_bn(width, width, 3)
        total += n * per_cell
    return total + 2 * 4 * c + 4 * c * num_classes + num_classes


def _short(s: str, limit: int = 90) -> str:
    return s if len(s) <= limit else s[: limit - 3] + "..."


def nb201_space() -> NB201Space:
    """The NAS-Bench-201 cell space with NB201's CIFAR skeleton (C=16, N=5)."""
    return NB201Space.from_config(
        "nb201", NB201Config(), "NAS-Bench-201 cell: 6 edges x 5 ops (tabular accuracy and device latency)"
    )
