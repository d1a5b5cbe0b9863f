"""Small I/O helpers: atomic writes and a description of the machine for provenance."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_arrays(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, Any],
                compressed: bool = True) -> None:
    """Write ``arrays`` and a JSON ``meta`` string as one ``.npz`` (nothing pickled), atomically."""
    import io

    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: str | os.PathLike[str], what: str, fmt: str, again: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`save_arrays` as ``(meta, arrays)`` (``allow_pickle=False``).

    ``what`` names the kind of file in the errors (``"latency predictor"``), ``fmt`` is the ``format`` its
    metadata must hold, ``again`` how to make it anew (``"fit it again with 'edgenas latency fit'"``). A
    missing, truncated or foreign file is one :class:`~edgenas.errors.EdgenasError` line.
    """
    import zipfile

    import numpy as np

    from edgenas.errors import EdgenasError

    p = Path(path)
    if not p.is_file():
        raise EdgenasError(f"{what} '{path}' not found")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgenasError(f"{what} '{path}' is corrupted or truncated ({type(exc).__name__}); {again}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise EdgenasError(f"'{path}' is not an edgenas {what} (expected format '{fmt}')")
    return meta, arrays


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Machine and library versions, for benchmark results and latency provenance."""
    import numpy

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    for mod in ("torch", "onnxruntime", "optuna", "sklearn"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info
