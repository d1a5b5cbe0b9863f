"""Run small linear algebra on one BLAS thread.

Model-based strategies solve many tiny systems (a few hundred unknowns). Multi-threaded BLAS makes those
an order of magnitude slower, and far worse on a machine whose cores are busy; one thread is fastest.
threadpoolctl ships with scikit-learn; without it this does nothing.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any


@functools.cache
def _controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController()


def single_thread_blas() -> contextlib.AbstractContextManager[Any]:
    """A context manager that limits BLAS to one thread inside it (about 0.1 ms to enter)."""
    controller = _controller()
    if controller is None:  # pragma: no cover
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
