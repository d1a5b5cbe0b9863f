"""``--estimator supernet:PATH``: accuracy of an architecture from a trained OFA supernet's shared weights.

The subnet is extracted, its BN statistics recalibrated on training images (Once-for-All, Cai et al.,
ICLR 2020) and its top-1 validation accuracy returned, in about a second instead of a training run. The
checkpoint must have been built for the search's space and the data's classes (one-line error otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.evaluators import EvalContext, Evaluator


class SupernetAccuracy(Evaluator):
    """Validation accuracy (%) of a subnet with the supernet's weights and recalibrated BN statistics."""

    name, unit, direction, cheap = "accuracy", "%", "maximize", False

    def __init__(self, net: Any, data: Any, source: str, recal: int = 500, seed: int = 0) -> None:
        self.net, self.data, self.source, self.recal, self.seed = net, data, source, recal, seed

    def __call__(self, arch: Mapping[str, Any]) -> float:
        from edgenas.supernets.specialize import evaluate_subnet

        return evaluate_subnet(self.net, dict(arch), self.data, self.recal, None, self.seed)[1]

    def describe(self) -> str:
        return f"accuracy [%] from the OFA supernet {self.source} (BN recalibrated on {self.recal} images)"


def supernet_estimator(path: str, ctx: EvalContext) -> Evaluator:
    """The factory of ``supernet:PATH`` (a checkpoint or an ``edgenas ofa train`` folder)."""
    from edgenas.supernets.shrinking import load_supernet

    if not path:
        raise EdgenasError("supernet: needs a path, e.g. --estimator supernet:runs/ofa")
    net, blob = load_supernet(path, ctx.space)
    data = ctx.data
    if (data.num_classes, data.in_channels) != (net.num_classes, net.in_channels):
        raise EdgenasError(f"supernet '{blob['path']}' was trained for {net.num_classes} classes and "
                           f"{net.in_channels} input channels; the data '{ctx.data_spec}' has "
                           f"{data.num_classes} and {data.in_channels}")
    return SupernetAccuracy(net, data, blob["path"], seed=ctx.seed)
