"""``make demo``: a hardware-aware search on the built-in digits data for this CPU, then its report and
its best model exported to ONNX.

Searches ``mbv3-tiny`` with regularized evolution for the most accurate networks under a latency budget
measured on this machine (onnxruntime, one thread), training each candidate for 2 epochs. Re-running it
continues the stored search instead of starting over.
"""

from __future__ import annotations

import argparse
import time

from edgenas.experiment import ExperimentConfig
from edgenas.export import export_trial
from edgenas.report import write_report

DEMO_LATENCY_MS = 0.35


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=DEMO_LATENCY_MS)
    args = parser.parse_args(argv)
    from rich.console import Console

    from edgenas.cli.search import _run_with_progress

    console = Console(stderr=True)
    start = time.perf_counter()
    config = ExperimentConfig(
        out=args.out, space="mbv3-tiny", data="digits", estimator="train", target="cpu", strategy="evolution",
        budget=args.budget, objectives=["accuracy", "latency"], constraints={"latency": args.latency_ms},
        epochs=2, seed=0, population_size=8, sample_size=3,
    )
    console.print(f"[bold]edgenas demo[/]: mbv3-tiny on digits, latency <= {args.latency_ms} ms on this CPU "
                  f"(onnxruntime, 1 thread), {args.budget} trained candidates")
    from pathlib import Path

    resume = (Path(args.out) / "config.json").exists()
    result = _run_with_progress(config, resume, console, quiet=False)
    report = write_report(args.out)
    exported = export_trial(args.out, "best", Path(args.out) / "best.onnx") if result.best else None
    console.print(f"\n{len(result.records)} trials ({sum(r.feasible for r in result.records)} feasible) "
                  f"in {time.perf_counter() - start:.0f} s")
    if result.best:
        b = result.best.metrics
        console.print(f"best: trial {result.best.number}, accuracy {b['accuracy']:.2f}%, "
                      f"latency {b['latency']:.3f} ms, {int(b['params']):,} params")
    console.print(f"report:     {report}")
    if exported:
        console.print(f"best model: {exported.onnx_path} (onnxruntime matches PyTorch within "
                      f"{exported.max_abs_diff:.1e})")


if __name__ == "__main__":
    main()
