"""Procedural scene generation speed (ray casting images + depth), in frames per second.

    python -m bench.bench_procedural [--frames 100] [--large-frames 10] [--threads 1 2] [--seeds 0 1]

Times generate_scene end to end (layout, camera path, rendering) for a walk-through at 256x144 and at
960x544 (the DL3DV images_4 training size), for each torch thread count, averaged over the seeds.
The load average is printed too: other processes on the machine slow everything down, so frames per
CPU-second (process time, all threads) is given as well; for one thread it is the idle-machine speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from data.procedural import ProceduralConfig, generate_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per scene at 256x144")
    parser.add_argument("--large-frames", type=int, default=10, help="frames per scene at 960x544")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()

    print("command: python -m bench.bench_procedural " + " ".join(sys.argv[1:]))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    generate_scene(ProceduralConfig.preset("tiny", num_frames=2))  # warm-up: imports, allocator
    for width, height, frames in ((256, 144, args.frames), (960, 544, args.large_frames)):
        for threads in args.threads:
            elapsed = cpu = 0.0
            for seed in args.seeds:
                config = ProceduralConfig(num_frames=frames, width=width, height=height, seed=seed,
                                          num_threads=threads)
                start, start_cpu = time.perf_counter(), time.process_time()
                generate_scene(config)
                elapsed += time.perf_counter() - start
                cpu += time.process_time() - start_cpu
            total = frames * len(args.seeds)
            print(f"{width}x{height}  threads {threads}: {total / elapsed:7.1f} frames/s "
                  f"({elapsed / len(args.seeds):6.2f} s per {frames}-frame scene; "
                  f"{total / cpu:6.1f} frames per CPU-second)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
