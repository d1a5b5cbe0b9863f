"""A process that opens a trial store when all its siblings do (kept apart from the test modules so that a
spawned child imports only this)."""

from __future__ import annotations

from typing import Any


def open_store_at_once(path: str, barrier: Any, results: Any) -> None:
    from edgenas.store import TrialStore

    barrier.wait()
    try:
        TrialStore(path, ["maximize", "minimize"])
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(exc).__name__}: {exc}"[:200])
