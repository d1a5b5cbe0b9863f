"""Shared by the benchmark scripts: where results go and what they record."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from edgenas.io import atomic_write_json, machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, figures: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine, versions and command line."""
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        **figures,
    })
    return path
