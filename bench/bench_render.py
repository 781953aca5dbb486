"""Speed of the CPU Gaussian rasterizer (model.render, backend "cpu") on scene-like clouds.

    python bench/bench_render.py                        # 256x256 @ 10k and 100k, 960x544 @ 500k
    python bench/bench_render.py --sizes 256x256:10000 --ref-sizes 256x256:10000 --rounds 5

Each size runs in its own subprocess so that its peak resident memory (ru_maxrss, which includes
the Python interpreter and torch, about 0.2 GB) is its own. Times are the best of --rounds after one
warm-up, so a busy machine skews them less; the load average is printed because other work on
the machine still shows, most in the thread-scaling figure. On a shared, oversubscribed machine
OpenMP's spin-waiting at the end of every parallel region makes multithreaded runs (ours and
torch's own ops alike) far slower than one thread; OMP_WAIT_POLICY=PASSIVE avoids that. "blends" are the (pixel, Gaussian) pairs actually
composited, counted by the kernel itself; blends/s divides them by the forward time, and by the
forward+backward time for that column (the backward revisits the same pairs).
The torch reference twin (backend "torch") is timed on --ref-sizes for the speed-up figure, and
thread scaling compares torch.set_num_threads(1) against --threads, alternating round by round.
Workers keep freed memory for reuse (model.cpu_allocator), as the commands that render do; the
reference twin's many large temporaries otherwise make its time vary by half between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.cpu_allocator import keep_freed_memory  # noqa: E402
from model.render import rasterize  # noqa: E402


def scene(n: int, width: int, height: int, seed: int = 0) -> dict:
    """A cloud filling the view frustum between 2 and 12 units, footprints of 1-4 pixels, SH degree 3."""
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * width
    z = 2.0 + 10.0 * torch.rand(n, generator=g) ** 1.5  # denser near the camera, like real scenes
    u = (torch.rand(n, generator=g) - 0.5) * 1.1 * width / f
    v = (torch.rand(n, generator=g) - 0.5) * 1.1 * height / f
    means = torch.stack([u * z, v * z, z], -1)
    footprint = torch.exp(torch.empty(n).uniform_(math.log(1.0), math.log(4.0), generator=g))  # pixels
    scales = (footprint * z / f)[:, None] * torch.empty(n, 3).uniform_(0.3, 1.0, generator=g)
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),
        "scales": scales,
        "opacities": torch.sigmoid(torch.randn(n, generator=g) * 1.5),
        "colors": torch.randn(n, 16, 3, generator=g) * 0.3,
        "viewmats": torch.eye(4)[None],
        "Ks": torch.tensor([[[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]]),
        "width": width,
        "height": height,
        "sh_degree": 3,
        "backgrounds": torch.ones(1, 3),
    }


def measure(size: str, n: int, backend: str, rounds: int, threads: list[int]) -> dict:
    """Best forward and forward+backward times per thread count (runs inside the worker). Thread
    counts alternate round by round, so a burst of load elsewhere hits them alike."""
    width, height = map(int, size.split("x"))
    base = scene(n, width, height)
    params = {k: v.clone().requires_grad_(True) for k, v in base.items() if k in ("means", "quats", "scales", "opacities", "colors")}
    inputs = {**base, **params}
    stats = {}

    def forward():
        with torch.no_grad():
            _, _, meta = rasterize(**inputs, backend=backend)
        stats.update(n_blends=meta["n_blends"], n_isects=meta["n_isects"])

    def forward_backward():
        for p in params.values():
            p.grad = None
        colors, alphas, _ = rasterize(**inputs, backend=backend)
        (colors.sum() + alphas.sum()).backward()

    best = {t: {"forward": math.inf, "forward_backward": math.inf} for t in threads}
    for round_ in range(rounds + 1):  # round 0 warms up (and compiles on first use)
        for t in threads:
            torch.set_num_threads(t)
            for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
                start = time.perf_counter()
                fn()
                if round_ > 0:
                    best[t][name] = min(best[t][name], time.perf_counter() - start)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
    return {"times": {str(t): v for t, v in best.items()}, "peak_gb": peak_gb, **stats}


def run_worker(size: str, n: int, backend: str, rounds: int, threads: list[int]) -> dict:
    cmd = [sys.executable, __file__, "--worker", f"{size}:{n}", "--backend", backend,
           "--rounds", str(rounds), "--threads", *map(str, threads)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[str, int]:
    size, n = text.split(":")
    return size, int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256x256:10000", "256x256:100000", "960x544:500000"],
                        help="WxH:N configurations for the cpu backend")  # fmt: skip
    parser.add_argument("--ref-sizes", nargs="*", default=["256x256:10000"], help="configurations also timed on the torch reference")
    parser.add_argument("--scaling-size", default="256x256:100000", help="configuration for the 1 vs all threads comparison ('' to skip)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--backend", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    if args.worker:
        keep_freed_memory()  # as the commands that render do (infer.py, refinement, training)
        size, n = parse_size(args.worker)
        print(json.dumps(measure(size, n, args.backend, args.rounds, args.threads)))
        return

    threads = args.threads[0]
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ]
    print("command: " + " ".join([*env, "python bench/bench_render.py", *sys.argv[1:]]))
    print(f"torch {torch.__version__}, {threads} threads, best of {args.rounds} rounds, SH degree 3, 1 camera, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'size':>9} {'gaussians':>9} {'isects':>9} {'blends':>10} {'fwd ms':>8} {'fwd+bwd ms':>10} "
          f"{'Mblend/s fwd':>12} {'Mblend/s f+b':>12} {'peak GB':>7}")  # fmt: skip
    results = {}
    for text in args.sizes:
        size, n = parse_size(text)
        r = run_worker(size, n, "cpu", args.rounds, [threads])
        t = r["times"][str(threads)]
        results[text] = t
        print(f"{size:>9} {n:>9} {r['n_isects']:>9} {r['n_blends']:>10} {1e3 * t['forward']:>8.1f} "
              f"{1e3 * t['forward_backward']:>10.1f} {r['n_blends'] / t['forward'] / 1e6:>12.1f} "
              f"{r['n_blends'] / t['forward_backward'] / 1e6:>12.1f} {r['peak_gb']:>7.2f}")  # fmt: skip

    for text in args.ref_sizes:
        size, n = parse_size(text)
        ours = results.get(text) or run_worker(size, n, "cpu", args.rounds, [threads])["times"][str(threads)]
        r = run_worker(size, n, "torch", 1, [threads])
        ref = r["times"][str(threads)]
        print(f"torch reference {size} {n}: fwd {1e3 * ref['forward']:.0f} ms, fwd+bwd {1e3 * ref['forward_backward']:.0f} ms, "
              f"peak {r['peak_gb']:.2f} GB -> cpu backend x{ref['forward'] / ours['forward']:.0f} faster forward, "
              f"x{ref['forward_backward'] / ours['forward_backward']:.0f} forward+backward")  # fmt: skip

    if args.scaling_size and threads > 1:
        size, n = parse_size(args.scaling_size)
        times = run_worker(size, n, "cpu", args.rounds, [1, threads])["times"]
        one, many = times["1"], times[str(threads)]
        print(f"thread scaling {size} {n}: 1 thread fwd {1e3 * one['forward']:.1f} ms, fwd+bwd {1e3 * one['forward_backward']:.1f} ms; "
              f"{threads} threads fwd {1e3 * many['forward']:.1f} ms, fwd+bwd {1e3 * many['forward_backward']:.1f} ms "
              f"-> x{one['forward'] / many['forward']:.2f} forward, x{one['forward_backward'] / many['forward_backward']:.2f} forward+backward")  # fmt: skip


if __name__ == "__main__":
    main()
