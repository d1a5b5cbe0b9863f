"""Where a search's accuracy evaluations run: in this process, or on the actors of a Ray cluster.

The experiment (:mod:`edgenas.experiment`) keeps everything that must stay in one place in its own
process: the strategy, the store, and the cheap metrics (latency measurement above all, which must never
overlap another timing). Only the accuracy evaluations, the expensive part, go to an executor, a batch of
candidates at a time, and come back in the order they were sent.

:class:`RayExecutor` scales them out with Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI
Applications", OSDI 2018): ``workers`` actors, one CPU each, each of which builds the search's accuracy
estimator once from the search's config (:func:`edgenas.experiment.eval_context`) and then evaluates one
architecture per call; ``ray.util.ActorPool`` hands each free actor the next architecture. On a local
machine it starts Ray itself; with ``address`` (or ``$RAY_ADDRESS``) it joins a running cluster, whose
nodes must then see the same data path and output folder (the trained weights are written there). Each
actor works in the search's working directory where that exists, so relative paths keep their meaning.

A worker process that dies (killed for memory, a lost node) is restarted and its evaluation run again, up
to :data:`RESTARTS` times per actor (Ray's actor fault tolerance; an evaluation is seeded, so a rerun gives
the same result); past that, or when a worker cannot even start (say the data path is missing on its node),
the search stops with a one-line error and everything stored so far is kept for ``--resume``.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.evaluators import Evaluator

Outcome = tuple[float, float]  # (accuracy, seconds the evaluation took)
RESTARTS = 2  # times a Ray actor that died is restarted (and its evaluation retried) before the search stops


class Executor(ABC):
    """Evaluates the accuracy of architectures; ``workers`` of them at once."""

    workers: int = 1

    @abstractmethod
    def map(self, archs: Sequence[Mapping[str, Any]]) -> Iterator[Outcome]:
        """``(accuracy, seconds)`` of each architecture, in the order given, each as soon as it is known."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the workers (default: nothing)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """One evaluation at a time, in this process, with the given accuracy evaluator."""

    def __init__(self, evaluator: Evaluator, workers: int = 1) -> None:
        self.evaluator, self.workers = evaluator, workers

    def map(self, archs: Sequence[Mapping[str, Any]]) -> Iterator[Outcome]:
        for arch in archs:
            yield _timed(self.evaluator, arch)


def _timed(evaluator: Evaluator, arch: Mapping[str, Any]) -> Outcome:
    start = time.perf_counter()
    accuracy = float(evaluator(arch))
    return accuracy, time.perf_counter() - start


class AccuracyWorker:
    """What one Ray actor holds: the accuracy estimator of a search, built once from its config."""

    def __init__(self, config: dict[str, Any], cwd: str | None = None) -> None:
        from edgenas.experiment import ExperimentConfig, accuracy_estimator, eval_context

        if cwd and os.path.isdir(cwd):  # the search's relative paths (--data, --out) mean what they meant there
            os.chdir(cwd)
        cfg = ExperimentConfig.from_json(config)
        self.evaluator = accuracy_estimator(cfg, eval_context(cfg))

    def evaluate(self, arch: dict[str, Any]) -> Outcome:
        return _timed(self.evaluator, arch)


class RayExecutor(Executor):
    """``workers`` Ray actors (one CPU each) that evaluate architectures for the search ``config``;
    ``actor_class`` is what each actor holds (built as ``actor_class(config, cwd)``, with an ``evaluate(arch)``
    method returning an :data:`Outcome`)."""

    def __init__(self, config: Mapping[str, Any], workers: int, address: str | None = None,
                 actor_class: type = AccuracyWorker) -> None:
        self.workers = workers
        self._started_ray = start_ray(workers, address)  # first: a missing Ray is its one-line error
        import ray
        from ray.util import ActorPool

        actor = ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)(actor_class)
        self._actors = [actor.remote(dict(config), os.getcwd()) for _ in range(workers)]
        self._pool = ActorPool(self._actors)

    def map(self, archs: Sequence[Mapping[str, Any]]) -> Iterator[Outcome]:
        from ray.exceptions import RayActorError, RayTaskError

        results = self._pool.map(lambda a, arch: a.evaluate.remote(arch), [dict(a) for a in archs])
        while True:
            try:
                outcome = next(results)
            except StopIteration:
                return
            except RayTaskError as exc:  # the evaluation raised: the worker's own error, as in-process
                cause = getattr(exc, "cause", None)
                if isinstance(cause, EdgenasError):
                    raise cause from None
                raise
            except RayActorError as exc:
                if getattr(exc, "actor_init_failed", False):
                    raise EdgenasError(f"a Ray worker could not start: {_root_cause(exc)}; the results stored so "
                                       f"far are kept: fix that and rerun with --resume") from None
                raise EdgenasError(f"a Ray worker died during an evaluation {RESTARTS + 1} times "
                                   f"({type(exc).__name__}); the results stored so far are kept: rerun with "
                                   f"--resume") from None
            yield float(outcome[0]), float(outcome[1])

    def close(self) -> None:
        import ray

        for a in self._actors:
            ray.kill(a)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def start_ray(workers: int, address: str | None = None) -> bool:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local one with ``workers`` CPUs;
    True when this call started it (the caller then shuts it down). Missing Ray or an unreachable cluster is a
    one-line error."""
    try:
        import ray
    except ImportError:
        raise EdgenasError("--workers > 1 runs on Ray, which is not installed; pip install 'edgenas[ray]' "
                           "(or use --workers 1)") from None
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise EdgenasError(f"cannot reach the Ray cluster at '{address}' ({exc}); check --ray-address "
                           f"(or $RAY_ADDRESS), or leave it out to run on this machine") from None
    return True


def _root_cause(exc: Exception) -> str:
    """The last line of a Ray error's report that names an exception (the worker's own error), without the
    module path of edgenas's errors."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        name, sep, message = line.partition(": ")
        if sep and name.replace(".", "").replace("_", "").isalnum() and name.split(".")[-1][:1].isupper():
            return message if name.endswith("EdgenasError") else line
    return lines[-1] if lines else type(exc).__name__


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` address that nothing listens on (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' and other forms: Ray resolves them itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(str(exc)) from None


def make_executor(config: Mapping[str, Any], evaluator: Evaluator) -> Executor:
    """In-process for ``workers`` 1, else Ray actors (see the module docstring)."""
    workers = int(config.get("workers", 1))
    if workers <= 1:
        return InProcessExecutor(evaluator)
    return RayExecutor(config, workers, config.get("ray_address"))
