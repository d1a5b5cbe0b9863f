"""Wall time and peak memory of the demo (``make demo``), run in a subprocess on a fresh output folder.

    python bench/demo.py
"""

from __future__ import annotations

import os
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
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb = usage.ru_maxrss / 1024
    cpu = usage.ru_utime + usage.ru_stime  # what an idle machine's wall time would be, single-threaded
    load = os.getloadavg()
    tail = [ln for ln in proc.stderr.splitlines() if ln.startswith(("best", "report", "best model"))]
    print(f"{'wall time (s)':<16}{wall:>8.1f}   target <= 300")
    print(f"{'CPU time (s)':<16}{cpu:>8.1f}   (user + system of the demo's processes; the demo is single-threaded)")
    print(f"{'peak RSS (MB)':<16}{peak_mb:>8.0f}   (largest process of the demo)")
    print(f"{'load average':<16}{load[0]:>8.2f}   (at the end; wall time grows with other work on the machine)")
    for line in tail:
        print(line)
    path = save("demo", {"wall_seconds": wall, "cpu_seconds": cpu, "load_average_at_end": load,
                         "peak_rss_mb": peak_mb, "target_seconds": 300,
                         "demo_output": proc.stderr.splitlines()[-6:]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
