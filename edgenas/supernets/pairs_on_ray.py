"""Once-for-All's (subnet, accuracy) pairs measured by Ray workers side by side.

Fitting OFA's accuracy predictor (Cai et al., ICLR 2020) needs hundreds to thousands of subnets, each
extracted from the supernet, BN-recalibrated and evaluated: the one costly step of specialisation, and one
whose subnets are independent. Here ``workers`` Ray tasks (on this machine or on the cluster at
``address``) each load the supernet and the data themselves and measure every k-th subnet of the same
seeded list (:func:`edgenas.supernets.specialize.measure_pairs` with ``shard=(i, k)``) into a cache file of
their own; the shards are then merged into the one cache the serial path uses, so the pairs, their order
and the predictor fitted on them are those of a one-process run. An interrupted run keeps what each shard
measured: the next run (serial or parallel) does not measure those again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgenas.errors import EdgenasError


def load_supernet_and_data(supernet: str, data: str, max_train: int | None, max_val: int | None,
                           device: str = "cpu") -> tuple[Any, Any]:
    """The supernet (a checkpoint or training folder) and the data it was trained on, both on ``device``;
    a one-line error when they do not fit each other."""
    from edgenas.data import load_dataset
    from edgenas.estimators.train import torch_device
    from edgenas.supernets.shrinking import load_supernet

    dev = torch_device(device)
    net, blob = load_supernet(supernet)
    d = load_dataset(data)
    d = d.subset(max_train, max_val) if (max_train or max_val) else d
    if (d.num_classes, d.in_channels) != (net.num_classes, net.in_channels):
        raise EdgenasError(f"supernet '{blob['path']}' was trained for {net.num_classes} classes and "
                           f"{net.in_channels} input channels; the data '{data}' has {d.num_classes} and "
                           f"{d.in_channels}")
    return net.to(dev), d.to(dev)


def shard_cache(cache: Path, shard: int) -> Path:
    return cache.with_name(f"{cache.stem}.shard{shard}{cache.suffix}")


def _measure_shard(supernet: str, data: str, max_train: int | None, max_val: int | None, n: int, seed: int,
                   recal: int, val: int | None, cache: str, shard: tuple[int, int], keep_hits: bool,
                   cwd: str) -> int:
    """One Ray task: load everything, measure one shard into its own cache; the number of pairs."""
    import torch

    from edgenas.supernets.specialize import measure_pairs

    os.chdir(cwd)
    torch.set_num_threads(1)
    net, d = load_supernet_and_data(supernet, data, max_train, max_val)
    archs, _ = measure_pairs(net, d, n, seed, recal, val, shard_cache(Path(cache), shard[0]), shard=shard,
                             extra_caches=[Path(cache)], keep_hits=keep_hits)
    return len(archs)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def merge_shards(cache: Path, shards: int) -> int:
    """Append the shard caches' pairs that ``cache`` lacks to it, then delete the shard files; the number of
    pairs appended."""
    from edgenas.supernets.specialize import _cache_rows  # the readable rows, a torn last line skipped

    def key(row: dict[str, Any]) -> str:
        return json.dumps(row["arch"], sort_keys=True)

    have = {key(row) for row in _cache_rows(cache)}
    added = []
    for i in range(shards):
        for row in _cache_rows(shard_cache(cache, i)):
            if key(row) not in have:
                have.add(key(row))
                added.append(json.dumps(row))
    if added:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in added))
    for i in range(shards):
        shard_cache(cache, i).unlink(missing_ok=True)
    return len(added)


def measure_pairs_on_ray(supernet: str, data: str, n: int, cache: Path, workers: int, seed: int = 0,
                         recal: int = 500, val: int | None = None, max_train: int | None = None,
                         max_val: int | None = None, keep_hits: bool = False, address: str | None = None,
                         progress: Callable[[str], None] | None = None) -> None:
    """Measure the ``n`` seeded pairs into ``cache`` on ``workers`` Ray tasks (CPU, one thread each); read
    them back with :func:`edgenas.supernets.specialize.measure_pairs` (nothing is measured again)."""
    from edgenas.executors import RESTARTS, start_ray

    if workers < 2:
        raise EdgenasError("measure_pairs_on_ray needs at least 2 workers; use measure_pairs for one process")
    started = start_ray(workers, address)
    import ray

    cache = Path(cache)
    try:
        task = ray.remote(num_cpus=1, max_retries=RESTARTS)(_measure_shard)
        pending = [task.remote(supernet, data, max_train, max_val, n, seed, recal, val, str(cache), (i, workers),
                               keep_hits, os.getcwd()) for i in range(workers)]
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=5.0)
            ray.get(done)  # a failed shard raises here
            if progress:
                measured = sum(_lines(shard_cache(cache, i)) for i in range(workers))
                progress(f"accuracy pairs on {workers} Ray workers: {measured} measured in this run")
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        merge_shards(cache, workers)  # keep what the other shards measured
        if isinstance(cause, EdgenasError):
            raise cause from None
        raise EdgenasError(f"a Ray worker failed while measuring accuracy pairs ({type(cause).__name__}: "
                           f"{cause}); the pairs measured so far are kept in {cache}") from None
    finally:
        if started:
            ray.shutdown()
    merge_shards(cache, workers)
