"""Tabular accuracy: NAS-Bench-201's test accuracy of an architecture, looked up instead of trained.

Spec: ``tabular:nb201[:DATASET]`` with DATASET one of ``cifar10`` (default), ``cifar100``,
``imagenet16_120``; the value is the test accuracy (%) after NB201's 200-epoch training (Dong & Yang,
ICLR 2020). The table is read from the reference-data folder (``--bench-data`` or ``EDGENAS_DATA``).
"""

from __future__ import annotations

import numpy as np

from edgenas.benchmarks.nb201_table import DATASETS, TableColumn, load_nb201, require_nb201_space
from edgenas.errors import unknown_name
from edgenas.evaluators import EvalContext
from edgenas.spaces.nb201 import NB201Space

BENCHMARKS = ("nb201",)


class TabularAccuracy(TableColumn):
    """Test accuracy (%) of one NB201 data set; stands in for training, so it is not ``cheap``."""

    name, unit, direction = "accuracy", "%", "maximize"
    cheap = False

    def __init__(self, space: NB201Space, values: np.ndarray, dataset: str) -> None:
        super().__init__(space, values, f"NAS-Bench-201 {dataset} test accuracy (200 epochs)")
        self.dataset = dataset


def make_tabular_estimator(arg: str, ctx: EvalContext) -> TabularAccuracy:
    """The factory of ``tabular:ARG`` (see the module docstring)."""
    bench, _, dataset = arg.partition(":")
    if bench not in BENCHMARKS:
        raise unknown_name("tabular benchmark (tabular:BENCH[:DATASET])", bench, BENCHMARKS)
    dataset = dataset or "cifar10"
    if dataset not in DATASETS:
        raise unknown_name("NB201 data set (tabular:nb201:DATASET)", dataset, DATASETS)
    space = require_nb201_space(ctx.space, f"tabular:{arg}")
    table = load_nb201(ctx.shared_data_dir())
    return TabularAccuracy(space, table.accuracy_of(dataset), dataset)
