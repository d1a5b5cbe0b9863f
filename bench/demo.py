"""Wall time and peak memory of the demo (``make demo``), run in a subprocess on a fresh output folder.

    python bench/demo.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "edgenas.demo", "--out", f"{tmp}/demo"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"demo failed:\n{proc.stderr}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tail = [ln for ln in proc.stderr.splitlines() if ln.startswith(("best", "report", "best model"))]
    print(f"{'wall time (s)':<16}{wall:>8.1f}   target <= 300")
    print(f"{'peak RSS (MB)':<16}{peak_mb:>8.0f}   (largest process of the demo)")
    for line in tail:
        print(line)
    path = save("demo", {"wall_seconds": wall, "peak_rss_mb": peak_mb, "target_seconds": 300,
                         "demo_output": proc.stderr.splitlines()[-6:]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
