"""Memory and time of held-out view scoring (PSNR, SSIM, LPIPS-VGG on 8-bit images) against the
number of views.

    python -m bench.bench_metrics [--views 8 64] [--size 960x544] [--no-lpips]

Each count runs in its own process, which scores views that are made one at a time (a smooth
image and a shifted, noisy copy of it) with the accumulator `infer.py` feeds each render to as it
is made; seconds count the scoring only.
The figure is the growth of peak resident memory during scoring over what the process held before
its first view, with the LPIPS network already loaded (Linux: the peak, VmHWM, is reset through
/proc/self/clear_refs, so imports do not mask it): with streaming it is the cost of one view,
whatever the number of views. LPIPS-VGG at 960x544 costs about 10 s per view on one core.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from inference.evaluation import ViewScores  # noqa: E402
from model.cpu_allocator import keep_freed_memory  # noqa: E402


def view_pair(index: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth colour image [H, W, 3] and a prediction-like copy: shifted by a pixel, with noise."""
    g = torch.Generator().manual_seed(index)
    y = torch.linspace(0, 1, height)[:, None, None]
    x = torch.linspace(0, 1, width)[None, :, None]
    phase = torch.rand(3, generator=g) * 6.28
    target = 0.5 + 0.4 * torch.sin(6.28 * (3 * x + 2 * y) + phase)  # [H, W, 3]
    pred = torch.roll(target, 1, dims=1) + 0.05 * torch.randn(height, width, 3, generator=g)
    return pred.clamp(0, 1), target


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MB."""
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def worker(views: int, height: int, width: int, with_lpips: bool) -> dict:
    keep_freed_memory()
    warm = ViewScores(with_lpips)
    warm.add(*view_pair(0, 32, 32))  # loads the LPIPS weights outside the measurement
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from what is resident now
    before = memory_mb("VmRSS")
    scores, seconds = ViewScores(with_lpips), 0.0
    for i in tqdm(range(views), desc="scoring", unit="view", leave=False):
        pred, target = view_pair(i, height, width)
        tic = time.perf_counter()
        scores.add(pred, target)
        seconds += time.perf_counter() - tic
    return {"views": views, "growth_mb": memory_mb("VmHWM") - before, "peak_mb": memory_mb("VmHWM"),
            "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, nargs="+", default=[8, 64])
    p.add_argument("--size", default="960x544", help="WxH")
    p.add_argument("--no-lpips", action="store_true")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    if args.worker is not None:
        print(json.dumps(worker(args.worker, height, width, not args.no_lpips)))
        return
    print("command: python -m bench.bench_metrics " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {width}x{height}, "
          f"{'PSNR + SSIM' if args.no_lpips else 'PSNR + SSIM + LPIPS-VGG'}")
    print("| views | peak growth while scoring | peak while scoring | seconds | per view |")
    print("|---:|---:|---:|---:|---:|")
    for views in args.views:
        command = [sys.executable, "-m", "bench.bench_metrics", "--worker", str(views), "--size", args.size]
        out = subprocess.run(command + (["--no-lpips"] if args.no_lpips else []), cwd=ROOT, capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {views} | {r['growth_mb']:.0f} MB | {r['peak_mb']:.0f} MB | {r['seconds']:.1f} | "
              f"{r['seconds'] / views:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
