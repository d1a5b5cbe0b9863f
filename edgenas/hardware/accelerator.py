"""An analytical model of a spatial DNN accelerator: latency and energy of a network, layer by layer.

The accelerator is a 2-D array of processing elements (PEs) fed from one on-chip global buffer, itself fed
from DRAM, plus a small vector unit for pooling and element-wise operators. How a convolution occupies the
array depends on the *dataflow*, i.e. which two loops of the convolution are unrolled over the PE rows and
columns, and which data each PE keeps (the taxonomy of Chen, Emer and Sze, "Eyeriss: A Spatial Architecture
for Energy-Efficient Dataflow for Convolutional Neural Networks", ISCA 2016):

* ``weight_stationary`` (NVDLA, TPU-like): input channels of a group over the rows, output channels over the
  columns; a depthwise convolution (one input channel per group) uses one row.
* ``output_stationary`` (ShiDianNao-like): output rows over the rows and output columns over the columns;
  small late feature maps leave PEs idle.
* ``row_stationary`` (Eyeriss): a *PE set* of ``kernel height`` rows x ``output rows`` columns computes the
  1-D row convolutions of one (input channel, output channel) pair; as many sets as fit run other pairs;
  output rows beyond the array width are folded into extra passes.

Per convolution or fully connected layer, compute cycles = the MACs spread over the occupied PEs, rounded up
per unrolled loop (``ceil`` divisions: the mapping's utilisation); DRAM traffic = that of the best loop order
and tiling of the layer around the global buffer (``mapping: searched``, the default: NAAS's compiler
mapping, searched exhaustively per layer by :mod:`edgenas.hardware.mapping`), or with ``mapping: fixed``
weights + outputs + inputs, the inputs once more for every extra weight tile when weights, inputs and outputs
do not fit the buffer together; the layer's time = max(cycles / clock, traffic / DRAM bandwidth)
(transfers overlapped with compute by double buffering). Pooling and element-wise operators run on the vector unit
(``vector_lanes`` elements per cycle) with the same DRAM bound. Energy = MACs x e_mac + buffer traffic x
e_buffer + DRAM traffic x e_dram, per byte, with the relative costs of the Eyeriss paper by default
(register file 1x, global buffer 6x, DRAM 200x a MAC).

A layer-level model in the spirit of MAESTRO (Kwon et al., MICRO 2019) and of the cost models NAAS (Lin
et al., DAC 2021) searches over, much simpler than either: loop order and tiling at one buffer level only
(the array's unrolling is the dataflow's), no inter-layer fusion. It ranks networks for an accelerator of
given parameters, and lets a search or a co-search vary those parameters; it is not a cycle-accurate
simulator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError, unknown_name
from edgenas.evaluators import Evaluator
from edgenas.hardware.graph import Op
from edgenas.hardware.mapping import best_mapping, shape_of
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.mbv3 import MBV3Space

DATAFLOWS = ("weight_stationary", "output_stationary", "row_stationary")
MAPPINGS = ("searched", "fixed")
ACCELERATOR_DIR = Path(__file__).resolve().parent / "accelerators"


@dataclass(frozen=True)
class Accelerator:
    """The parameters of a spatial accelerator (see the module docstring)."""

    name: str
    pe_rows: int
    pe_cols: int
    dataflow: str
    clock_mhz: float
    buffer_kb: float
    dram_gbs: float
    bytes_per_elem: int = 2
    vector_lanes: int = 16
    mapping: str = "searched"
    energy_pj: Mapping[str, float] = field(default_factory=lambda: {"mac": 1.0, "buffer_byte": 3.0,
                                                                     "dram_byte": 100.0})
    sources: tuple[str, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataflow not in DATAFLOWS:
            raise EdgenasError(f"accelerator '{self.name}': unknown dataflow '{self.dataflow}'; "
                               f"valid: {', '.join(DATAFLOWS)}")
        if self.mapping not in MAPPINGS:
            raise EdgenasError(f"accelerator '{self.name}': unknown mapping '{self.mapping}'; valid: "
                               f"{', '.join(MAPPINGS)}")
        for f in ("pe_rows", "pe_cols", "clock_mhz", "buffer_kb", "dram_gbs", "bytes_per_elem", "vector_lanes"):
            v = getattr(self, f)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise EdgenasError(f"accelerator '{self.name}': {f} must be a positive number, got {v!r}")
        missing = {"mac", "buffer_byte", "dram_byte"} - set(self.energy_pj)
        if missing:
            raise EdgenasError(f"accelerator '{self.name}': energy_pj lacks {', '.join(sorted(missing))}")

    @property
    def pes(self) -> int:
        return self.pe_rows * self.pe_cols

    def key(self) -> tuple[Any, ...]:
        """What the latency depends on (a hashable identity for caches)."""
        return (self.pe_rows, self.pe_cols, self.dataflow, self.clock_mhz, self.buffer_kb, self.dram_gbs,
                self.bytes_per_elem, self.vector_lanes, self.mapping)

    def with_(self, **changes: Any) -> Accelerator:
        """A copy with some parameters changed (a co-search's move)."""
        return Accelerator(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["energy_pj"] = dict(self.energy_pj)
        out["notes"] = dict(self.notes)
        out["sources"] = list(self.sources)
        return out


@dataclass
class LayerCost:
    """One operator on the accelerator."""

    name: str
    kind: str
    macs: int
    cycles: float
    utilisation: float  # MACs / (cycles x PEs) for array layers; lanes busy for vector ones
    dram_bytes: float
    compute_ms: float
    memory_ms: float
    energy_uj: float
    mapping: str = ""  # the buffer-level loop order and tiles (``mapping: searched``), e.g. "k>c>h k16 h7 c32"

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"


def array_cycles(acc: Accelerator, geometry: Sequence[int]) -> float:
    """Cycles of one convolution / linear layer ``(cin, cout, kh, kw, groups, out_h, out_w)`` on the PE
    array under ``acc.dataflow`` (see the module docstring)."""
    cin, cout, kh, kw, groups, oh, ow = (int(v) for v in geometry)
    cpg, opg = cin // groups, cout // groups
    R, C = acc.pe_rows, acc.pe_cols
    if acc.dataflow == "weight_stationary":
        return groups * math.ceil(cpg / R) * math.ceil(opg / C) * kh * kw * oh * ow
    if acc.dataflow == "output_stationary":
        return math.ceil(oh / R) * math.ceil(ow / C) * groups * opg * cpg * kh * kw
    # row stationary: a set = kh PE rows x min(oh, C) PE columns, one (input, output channel) pair each
    if kh > R:
        raise EdgenasError(f"accelerator '{acc.name}': a {kh}-row kernel does not fit {R} PE rows")
    cols = min(oh, C)
    sets = (R // kh) * (C // cols)
    pairs = groups * opg * cpg
    return math.ceil(pairs / sets) * math.ceil(oh / cols) * ow * kw


def conv_dram_bytes(acc: Accelerator, op: Op) -> tuple[float, str]:
    """DRAM bytes of a convolution / linear layer: with ``mapping: searched`` those of the best loop order and
    tiling for the buffer (:mod:`edgenas.hardware.mapping`, NAAS's compiler mapping); with ``fixed`` weights +
    outputs + the inputs once per buffer-sized weight tile. Also the mapping, in words."""
    b = acc.bytes_per_elem
    buffer = acc.buffer_kb * 1024
    if acc.mapping == "searched" and op.geometry is not None:
        nest = best_mapping(shape_of(op.geometry, op.in_elems), int(buffer // b))
        if nest is None:
            raise EdgenasError(f"accelerator '{acc.name}': its {acc.buffer_kb:g} KB buffer cannot hold even the "
                               f"smallest tiles of layer '{op.name}'; give it a larger buffer_kb")
        return nest.dram_elems * b, f"{'>'.join(nest.order)} k{nest.tk} h{nest.th} c{nest.tc}"
    weights, inputs, outputs = op.weight_elems * b, op.in_elems * b, op.out_elems * b
    tiles = max(1, math.ceil((weights + inputs + outputs) / buffer))
    return weights + outputs + inputs * tiles, "fixed"


def op_cost(acc: Accelerator, op: Op) -> LayerCost:
    """The cost of one operator of :func:`edgenas.hardware.graph.graph_ops` (or the MBV3 layer index)."""
    b = acc.bytes_per_elem
    hz = acc.clock_mhz * 1e6
    weights, inputs, outputs = op.weight_elems * b, op.in_elems * b, op.out_elems * b
    if op.kind in ("conv", "linear"):
        if op.geometry is None:
            raise EdgenasError(f"operator '{op.name}' has no geometry: the accelerator model needs "
                               "(channels, kernel, groups, output size) of every convolution")
        cycles = array_cycles(acc, op.geometry)
        util = op.macs / max(cycles * acc.pes, 1)
        dram, mapping = conv_dram_bytes(acc, op)
        macs = op.macs
    elif op.kind in ("pool", "eltwise"):
        work = max(op.in_elems, op.out_elems)
        cycles = math.ceil(work / acc.vector_lanes)
        util = work / max(cycles * acc.vector_lanes, 1)
        dram, macs, mapping = weights + inputs + outputs, 0, ""
    else:  # fused, view, input: free (folded into their producer, or a view)
        return LayerCost(op.name, op.kind, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    e = acc.energy_pj
    energy = (macs * e["mac"] + (weights + inputs + outputs) * e["buffer_byte"] + dram * e["dram_byte"]) * 1e-6
    return LayerCost(op.name, op.kind, int(macs), float(cycles), float(util), float(dram), cycles / hz * 1e3,
                     dram / (acc.dram_gbs * 1e9) * 1e3, float(energy), mapping)


def network_cost(acc: Accelerator, ops: Iterable[Op]) -> tuple[list[LayerCost], dict[str, float]]:
    """Per-layer costs and the network's totals: latency (ms, layers one after another), energy (uJ),
    cycles, DRAM bytes, MAC utilisation of the array (MACs / (array cycles x PEs))."""
    layers = [op_cost(acc, op) for op in ops]
    layers = [c for c in layers if c.cycles or c.dram_bytes]
    array = [c for c in layers if c.kind in ("conv", "linear")]
    macs = sum(c.macs for c in array)
    array_cycles_total = sum(c.cycles for c in array)
    summary = {
        "latency_ms": sum(c.ms for c in layers),
        "energy_uj": sum(c.energy_uj for c in layers),
        "cycles": sum(c.cycles for c in layers),
        "dram_bytes": sum(c.dram_bytes for c in layers),
        "macs": float(macs),
        "array_utilisation": macs / max(array_cycles_total * acc.pes, 1),
        "memory_bound_layers": float(sum(c.bound == "memory" for c in layers)),
    }
    return layers, summary


# ------------------------------------------------------------------------------------- presets / files
def list_accelerators() -> list[str]:
    return sorted(p.stem for p in ACCELERATOR_DIR.glob("*.yaml"))


def load_accelerator(name_or_path: str | os.PathLike[str]) -> Accelerator:
    """A shipped preset by name (``edgenas/hardware/accelerators/NAME.yaml``) or a YAML file of your own."""
    import yaml

    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) else ACCELERATOR_DIR / f"{text}.yaml"
    if not path.is_file():
        if text.endswith((".yaml", ".yml")):
            raise EdgenasError(f"accelerator file '{text}' not found")
        raise unknown_name("accelerator", text, list_accelerators())
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EdgenasError(f"accelerator file '{path}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise EdgenasError(f"accelerator file '{path}' must hold a mapping of parameters")
    allowed = {f for f in Accelerator.__dataclass_fields__}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise EdgenasError(f"accelerator file '{path}': unknown key(s) {', '.join(unknown)}; "
                           f"valid: {', '.join(sorted(allowed))}")
    raw.setdefault("name", path.stem)
    raw["sources"] = tuple(raw.get("sources") or ())
    try:
        return Accelerator(**raw)
    except TypeError as exc:
        raise EdgenasError(f"accelerator file '{path}': {exc}") from None


# ------------------------------------------------------------------------------------------- evaluator
class AcceleratorLatency(Evaluator):
    """``--target accel:NAME|FILE.yaml``: the model's latency (ms) of each architecture on the accelerator.

    Instant and vectorised for MBV3 spaces (per-layer costs summed with the layer index); other spaces trace
    each network's graph once (memoised)."""

    name, unit, direction = "latency", "ms", "minimize"
    cheap = True
    summary_field = "latency_ms"  # the :func:`network_cost` total this evaluator returns

    def __init__(self, space: SearchSpace, acc: Accelerator, num_classes: int, in_channels: int = 3) -> None:
        self.space, self.acc, self.num_classes, self.in_channels = space, acc, num_classes, in_channels
        # a codesign space (network x accelerator): each candidate runs on its own accelerator, ``acc`` with the
        # candidate's searched parameters
        self.codesign = hasattr(space, "hardware_part")
        self.network = space.network if self.codesign else space  # type: ignore[attr-defined]
        self.layers = None
        self._memo: dict[str, float] = {}
        self._ops: dict[str, list[Op]] = {}
        self._layer_ms: dict[tuple[Any, ...], np.ndarray] = {}
        if isinstance(self.network, MBV3Space):
            from edgenas.hardware.layers import MBV3Layers

            self.layers = MBV3Layers(self.network, num_classes, in_channels)
            self.instant = True

    @property
    def layer_ms(self) -> np.ndarray:
        """Per-layer latency on the fixed accelerator (MBV3 spaces)."""
        return self._layer_table(self.acc)

    def _layer_table(self, acc: Accelerator) -> np.ndarray:
        if acc.key() not in self._layer_ms:
            assert self.layers is not None
            self._layer_ms[acc.key()] = np.array([network_cost(acc, lay.ops())[1][self.summary_field]
                                                  for lay in self.layers.layers])
        return self._layer_ms[acc.key()]

    def accelerator_of(self, arch: Mapping[str, Any]) -> Accelerator:
        return self.space.accelerator(arch, self.acc) if self.codesign else self.acc  # type: ignore[attr-defined]

    def evaluate_batch(self, archs: Sequence[Mapping[str, Any]]) -> list[float]:
        if self.layers is None:
            return [self(a) for a in archs]
        if not self.codesign:
            return self.layers.sum(self.layer_ms, self.layers.batch_layer_ids(archs)).tolist()
        out = np.empty(len(archs))
        groups: dict[tuple[Any, ...], tuple[Accelerator, list[int]]] = {}
        for i, a in enumerate(archs):
            acc = self.accelerator_of(a)
            groups.setdefault(acc.key(), (acc, []))[1].append(i)
        for acc, rows in groups.values():
            nets = [self.space.network_part(archs[i]) for i in rows]  # type: ignore[attr-defined]
            out[rows] = self.layers.sum(self._layer_table(acc), self.layers.batch_layer_ids(nets))
        return out.tolist()

    def __call__(self, arch: Mapping[str, Any]) -> float:
        if self.layers is not None:
            return self.evaluate_batch([arch])[0]
        from edgenas.hardware.roofline import arch_ops

        key = self.space.key(arch)
        if key not in self._memo:
            net = self.space.network_part(arch) if self.codesign else arch  # type: ignore[attr-defined]
            net_key = self.network.key(net)
            if net_key not in self._ops:  # traced once per network, whatever accelerator it runs on
                self._ops[net_key] = arch_ops(self.network, net, self.num_classes, self.in_channels)
            self._memo[key] = network_cost(self.accelerator_of(arch), self._ops[net_key])[1][self.summary_field]
        return self._memo[key]

    def describe(self) -> str:
        a = self.acc
        if self.codesign:
            return (f"latency [ms] on each candidate's accelerator: '{a.name}' ({a.clock_mhz:g} MHz, {a.dram_gbs:g} "
                    f"GB/s) with the searched PE array, buffer and dataflow")
        return (f"latency [ms] on the accelerator model '{a.name}' ({a.pe_rows}x{a.pe_cols} PEs, {a.dataflow}, "
                f"{a.clock_mhz:g} MHz, {a.buffer_kb:g} KB buffer, {a.dram_gbs:g} GB/s)")


class AcceleratorEnergy(AcceleratorLatency):
    """The model's energy of one inference (``energy``, in the units of the accelerator's ``energy_pj``
    x 1e-6: uJ for pJ figures, relative for the presets' MAC-normalised ones), on the same accelerator as
    the ``accel:`` target (each candidate's own in a co-design space)."""

    name, unit = "energy", "uJ"
    summary_field = "energy_uj"

    def describe(self) -> str:
        return super().describe().replace("latency [ms]", "energy [energy_pj x 1e-6]", 1)

    @classmethod
    def beside(cls, latency: AcceleratorLatency) -> AcceleratorEnergy:
        """The energy on ``latency``'s accelerator, sharing its traced operators (each network traced once)."""
        energy = cls(latency.space, latency.acc, latency.num_classes, latency.in_channels)
        energy._ops = latency._ops
        return energy


def accelerator_target(arg: str, ctx: Any) -> AcceleratorLatency:
    if not arg:
        raise EdgenasError(f"accel: needs an accelerator, e.g. accel:eyeriss ({', '.join(list_accelerators())}) "
                           "or accel:my_accel.yaml")
    return AcceleratorLatency(ctx.space, load_accelerator(arg), ctx.data.num_classes, ctx.data.in_channels)
