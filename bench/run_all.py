"""Run every benchmark and write one markdown report (default: bench/RESULTS.md).

    python bench/run_all.py [--out bench/RESULTS.md] [--only render ssd ...]

Each benchmark runs in its own process with its default (quick) settings; its printed figures go
into the report verbatim, under a table of what ran, how long it took and the command that
reproduces it. The machine (CPU model, cores, memory, load average, torch) heads the report, since
figures from shared machines are only comparable side by side within one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCHMARKS = {
    "render": ["bench/bench_render.py"],
    "ssd": ["bench/bench_ssd.py"],
    "attention": ["bench/bench_attention.py", "--threads", "2", "--rounds", "2"],
    "model": ["bench/bench_model.py", "--views", "8", "16", "32", "64", "--paper-256"],
    "blocks": ["bench/bench_blocks.py", "--kinds", "t", "m", "io"],
    "train": ["-m", "bench.bench_train"],
    "refine": ["-m", "bench.bench_refine", "--pred-steps", "200", "--classic-steps", "300"],
    "data": ["-m", "bench.bench_data"],
    "procedural": ["-m", "bench.bench_procedural"],
    "feedforward": ["-m", "bench.bench_feedforward"],
    "metrics": ["-m", "bench.bench_metrics", "--no-lpips"],
}


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    memory = ""
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 2**20:.0f} GiB"
    return (f"{cpu}, {os.cpu_count()} cores{memory}; load average {os.getloadavg()[0]:.1f}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run just these")
    args = p.parse_args()
    names = args.only or list(BENCHMARKS)
    rows, sections = [], []
    total = time.perf_counter()
    for name in names:
        command = [sys.executable, *BENCHMARKS[name]]
        shown = "python " + " ".join(BENCHMARKS[name])
        print(f"running {shown}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
        rows.append(f"| {name} | {status} | {seconds:.0f} s | `{shown}` |")
        output = proc.stdout.strip() + ("\n" + proc.stderr.strip()[-2000:] if proc.returncode else "")
        sections.append(f"### {name}\n\n```\n{output}\n```\n")
    report = (f"# Benchmarks\n\nMachine: {machine()}\n\n| benchmark | status | wall time | command |\n|---|---|---|---|\n"
              + "\n".join(rows) + f"\n\nAll benchmarks: {(time.perf_counter() - total) / 60:.1f} minutes.\n\n"
              + "\n".join(sections))
    args.out.write_text(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
