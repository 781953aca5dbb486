"""Time and memory of the whole network against the number of views, and against this machine's matmul peak.

    python bench/bench_model.py                    # `small` at 8/16/32/64 views of 256x256, hybrid vs transformer-only
    python bench/bench_model.py --paper-256        # + `paper`, 32 views 256x256, forward, GFLOP/s vs matmul peak
    python bench/bench_model.py --paper-960        # + `paper`, 32 views 960x544 inference (~20 GB, minutes)
    python bench/bench_model.py --views 8 16 --backward   # also forward+backward (training mode)

Each case runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own; the
figure includes the weights and inputs. Times are the best of the warm-up and --repeats more runs.
FLOPs: torch's FlopCounterMode on the first run (matmuls, convolutions) plus 4 L^2 D per
attention block, which FlopCounterMode does not count for CPU attention.

--tuned-malloc runs the cases with glibc's allocator told never to return memory to the OS
(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ huge): on virtual machines where page faults are
expensive, reusing freed buffers instead of re-faulting them is often worth 10-40% on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.build import build_model  # noqa: E402
from model.cameras import Cameras  # noqa: E402
from model.config import preset  # noqa: E402


def make_inputs(views: int, height: int, width: int) -> tuple[torch.Tensor, Cameras]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, views, height, width, 3, generator=gen)
    angles = torch.linspace(0, 2 * torch.pi, views + 1)[:-1]
    c2w = torch.eye(4).repeat(1, views, 1, 1)  # cameras on a circle looking at the origin
    c2w[0, :, 0, 0], c2w[0, :, 0, 2] = torch.cos(angles), -torch.sin(angles)
    c2w[0, :, 2, 0], c2w[0, :, 2, 2] = torch.sin(angles), torch.cos(angles)
    c2w[0, :, :3, 3] = -2.0 * c2w[0, :, :3, 2]
    intr = torch.tensor([0.8 * width, 0.8 * width, width / 2, height / 2]).repeat(1, views, 1)
    return images, Cameras(intr, c2w, width, height)


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def attention_flops(config, views: int, height: int, width: int) -> int:
    """QK^T and AV of every transformer block: 4 L^2 D for a sequence of L tokens of width D."""
    tokens = views * (height // config.patch_size) * (width // config.patch_size)
    total = 0
    for i, (kind, width_i) in enumerate(zip(config.blocks, config.widths)):
        merged = config.merge_before is not None and i >= config.merge_before
        length = config.num_global_tokens + (tokens // 4 if merged else tokens)
        total += 4 * length**2 * width_i if kind == "t" else 0
    return total


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(args: argparse.Namespace) -> dict:
    """One configuration in this process: returns times, FLOPs and peak memory as a dict."""
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    config = preset(args.preset)
    if args.pattern == "transformer":
        config.blocks = "t" * len(config.blocks)
    elif args.pattern != "hybrid":  # an explicit block string, for experiments
        config.blocks = args.pattern
    config.checkpointing = args.mode == "train"
    model = build_model(config)
    images, cameras = make_inputs(args.case_views, args.height, args.width)

    if args.mode == "infer":
        model.eval()

        def step():
            with torch.inference_mode():
                model(images, cameras)
    else:
        model.train()

        def step():
            out = model(images, cameras)
            g = out.gaussians
            (g.means.mean() + g.sh.mean() + g.log_scales.mean() + g.opacity_logits.mean()).backward()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flops = None
    if args.count_flops:
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            first = _timed(step)
        flops = counter.get_total_flops() + attention_flops(config, args.case_views, args.height, args.width)
    else:
        first = _timed(step)
    times = [first] + [_timed(step) for _ in range(args.repeats)]
    peak = matmul_peak() if args.count_flops else None
    return {"time": min(times), "flops": flops, "matmul_peak": peak,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "setup_rss_gb": base_rss / 2**20}


TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def spawn(preset_name: str, pattern: str, views: int, height: int, width: int, mode: str, repeats: int,
          count_flops: bool = False, tuned_malloc: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--case", "--preset", preset_name, "--pattern", pattern,
           "--case-views", str(views), "--height", str(height), "--width", str(width), "--mode", mode,
           "--repeats", str(repeats)] + (["--count-flops"] if count_flops else [])
    env = {**os.environ, **TUNED_MALLOC} if tuned_malloc else None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--backward", action="store_true", help="also time forward+backward (training mode)")
    parser.add_argument("--no-transformer-only", action="store_true", help="skip the transformer-only comparison")
    parser.add_argument("--paper-256", action="store_true", help="paper preset, 32 views 256x256, forward")
    parser.add_argument("--paper-960", action="store_true", help="paper preset, 32 views 960x544, inference")
    parser.add_argument("--repeats", type=int, default=1, help="runs after the first; the best run is reported")
    parser.add_argument("--tuned-malloc", action="store_true", help="keep freed memory mapped (see above)")
    # internal: run one case in this process
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    parser.add_argument("--pattern", default="hybrid", help=argparse.SUPPRESS)
    parser.add_argument("--case-views", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="infer", help=argparse.SUPPRESS)
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times are the best of {1 + args.repeats} "
          f"runs; allocator {'tuned' if args.tuned_malloc else 'default'}")
    patterns = ["hybrid"] + ([] if args.no_transformer_only else ["transformer"])
    modes = ["infer"] + (["train"] if args.backward else [])
    small = preset("small")
    print(f"`small`: blocks {small.blocks!r}, merge before {small.merge_before}, "
          f"widths {small.dim}->{small.merged_dim}; transformer-only: blocks {'t' * len(small.blocks)!r}, same widths")
    for mode in modes:
        label = "forward (inference_mode)" if mode == "infer" else "forward+backward (train, checkpointing)"
        print(f"\n`small` at 256x256, {label}")
        print(f"{'views':>6} | " + " | ".join(f"{p + ' s':>16}{'peak GB':>9}" for p in patterns))
        results = {p: {} for p in patterns}
        for v in args.views:
            cells = []
            for p in patterns:
                r = spawn("small", p, v, 256, 256, mode, args.repeats, tuned_malloc=args.tuned_malloc)
                results[p][v] = r
                cells.append(f"{r['time']:>16.2f}{r['peak_rss_gb']:>9.2f}" if "error" not in r else f"{'failed':>25}")
            print(f"{v:>6} | " + " | ".join(cells))
        for p in patterns:
            r = results[p]
            if 32 in r and 64 in r and "error" not in r[32] and "error" not in r[64]:
                print(f"  {p}: t64/t32 = {r[64]['time'] / r[32]['time']:.2f}")

    if args.paper_256:
        r = spawn("paper", "hybrid", 32, 256, 256, "infer", 0, count_flops=True, tuned_malloc=args.tuned_malloc)
        print("\n`paper`, 32 views 256x256, forward (inference_mode)")
        if "error" in r:
            print("  failed:", r["error"])
        else:
            rate = r["flops"] / r["time"]
            print(f"  time {r['time']:.1f} s, peak memory {r['peak_rss_gb']:.1f} GB, {r['flops'] / 1e12:.2f} TFLOP "
                  f"(matmul/conv/attention), {rate / 1e9:.1f} GFLOP/s = {100 * rate / r['matmul_peak']:.0f}% of "
                  f"the fp32 matmul peak measured in the same process ({r['matmul_peak'] / 1e9:.1f} GFLOP/s)")
    if args.paper_960:
        r = spawn("paper", "hybrid", 32, 544, 960, "infer", 0, tuned_malloc=args.tuned_malloc)
        print("\n`paper`, 32 views 960x544, inference (inference_mode, head decoded 8 views at a time), "
              "single cold run")
        print("  failed: " + r["error"] if "error" in r else
              f"  time {r['time']:.1f} s, peak memory {r['peak_rss_gb']:.1f} GB (setup {r['setup_rss_gb']:.1f} GB)")
    print("\nreproduce: python bench/bench_model.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
