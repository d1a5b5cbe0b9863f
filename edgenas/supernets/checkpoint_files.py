"""Supernet checkpoint files: written atomically, read back without unpickling code.

Checkpoints hold tensors and plain values only, are written whole or not at all (a killed run leaves the
previous file), and load with ``torch.load(..., weights_only=True)``; each carries a ``format`` string, and
anything else (another file, another kind of checkpoint) is a one-line error.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgenas.errors import EdgenasError
from edgenas.io import atomic_write_bytes


def save_checkpoint(path: str | Path, blob: dict[str, Any]) -> None:
    """``torch.save`` of ``blob`` to ``path``, atomically."""
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path, fmt: str, names: Sequence[str], kind: str, noun: str,
                    train_command: str) -> dict[str, Any]:
    """The checkpoint at ``path`` (or the first of ``names`` in that folder) whose ``format`` is ``fmt``;
    ``kind`` (``OFA``), ``noun`` (``supernet``) and ``train_command`` word the errors. The blob gains ``path``."""
    p = Path(path)
    if p.is_dir():
        found = [p / n for n in names if (p / n).exists()]
        if not found:
            raise EdgenasError(f"no {' or '.join(names)} in '{path}'; train one with '{train_command}'")
        p = found[0]
    if not p.exists():
        raise EdgenasError(f"{noun} checkpoint '{path}' not found")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise EdgenasError(f"'{p}' is not a readable edgenas {kind} checkpoint ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise EdgenasError(f"'{p}' is not an edgenas {kind} checkpoint (expected format '{fmt}')")
    blob["path"] = str(p)
    return blob
