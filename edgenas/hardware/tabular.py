"""Device latency of NB201 architectures from measured tables: ``--target nb201:DEVICE``.

DEVICE is a column of ``nb201/nb201_latency_ms.csv``: ``pixel3``, ``raspi4``, ``eyeriss``, ``fpga``
(HW-NAS-Bench, Li et al., ICLR 2021; eyeriss and fpga simulated), ``gold_6226``, ``titan_rtx_1``,
``1080ti_1`` (HELP, Lee et al., NeurIPS 2021): batch-1 latency in ms of the CIFAR-10 network.
"""

from __future__ import annotations

import numpy as np

from edgenas.benchmarks.nb201_table import TableColumn, load_nb201, require_nb201_space
from edgenas.evaluators import EvalContext
from edgenas.spaces.nb201 import NB201Space


class TabularLatency(TableColumn):
    """Latency (ms) of one device column."""

    name, unit, direction = "latency", "ms", "minimize"
    cheap = True

    def __init__(self, space: NB201Space, values: np.ndarray, device: str) -> None:
        super().__init__(space, values, f"the measured NB201 latency table, device {device}")
        self.device = device


def make_nb201_target(arg: str, ctx: EvalContext) -> TabularLatency:
    """The factory of ``nb201:DEVICE``."""
    space = require_nb201_space(ctx.space, f"nb201:{arg}")
    table = load_nb201(ctx.shared_data_dir())
    return TabularLatency(space, table.latency_of(arg), arg)
