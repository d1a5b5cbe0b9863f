"""Measured latency of translating one sentence with a SubTransformer on this CPU, and HAT-style data sets.

HAT (Wang et al., ACL 2020) measures each sampled SubTransformer's encoder and decoder latency on the
device and trains a latency predictor on the ten architecture features; :func:`measure_translation` does
the measuring here: a SubTransformer of the space (random weights: latency does not depend on them) encodes
one sentence of ``source_tokens`` tokens, then the decoder runs ``target_tokens`` greedy steps, each over
the whole prefix (no cached keys and values), in eager PyTorch with fixed threads. Each measurement runs in
a fresh process with the allocator's thresholds set high (:data:`~edgenas.hardware.measure.STABLE_ALLOCATOR_ENV`),
after warm-up, and reports the median over timed runs (encoder and decoder apart, as HAT's data sets do).

:func:`collect_dataset` writes a CSV in HAT's format (its feature columns, then ``latency_mean_encoder``,
``latency_mean_decoder``, ``latency_std_encoder``, ``latency_std_decoder``), which ``edgenas latency fit
--space SPACE --dataset FILE`` turns into a predictor. The CSV is rewritten atomically after every
SubTransformer and a run continues a file that exists (the same seed draws the same SubTransformers; the
rows already there are checked against them), so an interrupted collection loses nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.io import atomic_write_text

LATENCY_COLUMNS = ("latency_mean_encoder", "latency_mean_decoder", "latency_std_encoder", "latency_std_decoder")


@dataclass(frozen=True)
class TranslationTiming:
    """What to time: sentence lengths, vocabularies, threads, warm-up and timed runs."""

    source_tokens: int = 12
    target_tokens: int = 12
    src_vocab: int = 28
    tgt_vocab: int = 28
    threads: int = 1
    warmup: int = 3
    runs: int = 15
    min_seconds: float = 0.2

    def __post_init__(self) -> None:
        if min(self.source_tokens, self.target_tokens, self.threads, self.runs) < 1 or self.src_vocab < 5:
            raise EdgenasError("source/target tokens, threads and runs must be at least 1, vocabularies at least 5")


def measure_translation(space: Any, arch: Mapping[str, Any],
                        timing: TranslationTiming | None = None) -> dict[str, float]:
    """Encoder and decoder latency (ms: median and std over runs) of ``arch``, measured in a fresh process."""
    timing = timing or TranslationTiming()
    from edgenas.hardware.measure import worker_env

    job = {"space": space.ref or space.name, "arch": space.validate(arch), "timing": asdict(timing)}
    proc = subprocess.run([sys.executable, "-m", "edgenas.hardware.transformer_latency"], input=json.dumps(job),
                          capture_output=True, text=True, env=worker_env(timing.threads))
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"SubTransformer latency measurement failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _time_in_this_process(job: dict[str, Any]) -> dict[str, float]:
    import torch

    from edgenas.hardware.measure_worker import time_runs
    from edgenas.models.transformer import BOS, build_subtransformer
    from edgenas.spaces import get_space

    t = TranslationTiming(**job["timing"])
    torch.set_num_threads(t.threads)
    torch.set_num_interop_threads(1)
    space = get_space(job["space"])
    net = build_subtransformer(space, job["arch"], t.src_vocab, t.tgt_vocab, dropout=0.0).eval()
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, t.src_vocab, (1, t.source_tokens), generator=gen)
    with torch.inference_mode():
        enc_outs, pad = net.encode(src)

        def encoder() -> object:
            return net.encode(src)

        def decoder() -> object:
            out = torch.full((1, 1), BOS, dtype=torch.long)
            for _ in range(t.target_tokens):
                nxt = net.decode(out, enc_outs, pad)[:, -1].argmax(-1, keepdim=True)
                out = torch.cat([out, nxt], dim=1)
            return out

        enc = time_runs(encoder, t.warmup, t.runs, t.min_seconds)
        dec = time_runs(decoder, t.warmup, t.runs, t.min_seconds)
    return {"latency_mean_encoder": statistics.median(enc), "latency_mean_decoder": statistics.median(dec),
            "latency_std_encoder": statistics.pstdev(enc), "latency_std_decoder": statistics.pstdev(dec)}


def read_rows(path: str) -> list[dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def collect_dataset(space: Any, n: int, path: str, timing: TranslationTiming | None = None, seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure ``n`` random SubTransformers (seeded; the smallest and the largest first) into a HAT-format
    CSV at ``path``, continuing the file when it already holds the first of them (see the module docstring)."""
    from edgenas.spaces.transformer import FEATURES

    timing = timing or TranslationTiming()
    say = progress or (lambda _m: None)
    rows: list[dict[str, Any]] = read_rows(path)
    if rows and list(rows[0]) != [*FEATURES, *LATENCY_COLUMNS]:
        raise EdgenasError(f"'{path}' is not a SubTransformer latency file of edgenas (other columns); give a new "
                           "--out")
    rng = np.random.default_rng(seed)
    archs = [space.extreme(smallest=True), space.extreme(smallest=False)]
    archs = (archs + [space.sample(rng) for _ in range(max(0, n - 2))])[:n]
    features = space.latency_features(archs)
    for i, row in enumerate(rows[:n]):
        if not np.allclose([float(row[f]) for f in FEATURES], features[i]):
            raise EdgenasError(f"'{path}' row {i + 2} is not the SubTransformer this space and seed draw there; "
                               "continue it with the --seed and --space it was made with, or give a new --out")
    t0 = time.perf_counter()
    for i in range(len(rows), n):
        ms = measure_translation(space, archs[i], timing)
        rows.append({**dict(zip(FEATURES, features[i].tolist(), strict=True)), **ms})
        _write(path, rows)
        say(f"{i + 1}/{n}: encoder {ms['latency_mean_encoder']:.3f} ms, decoder {ms['latency_mean_decoder']:.3f} ms "
            f"({time.perf_counter() - t0:.0f} s)")
    return rows


def _write(path: str, rows: list[dict[str, Any]]) -> None:
    from edgenas.spaces.transformer import FEATURES

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*FEATURES, *LATENCY_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


if __name__ == "__main__":
    print(json.dumps(_time_in_this_process(json.loads(sys.stdin.read()))))
