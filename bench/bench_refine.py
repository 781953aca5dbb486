"""Per-scene refinement on the CPU: speed, and quality against steps and time.

    python -m bench.bench_refine [--size 128] [--pred-steps 300] [--classic-steps 1000] [--speed-size 256]

1. Speed: optimisation steps per second at --speed-size squared (default 256x256) with 10k and 100k
   Gaussians (the short preset: no densification, one view per step, loss and Adam included).
2. Quality from a prediction-like start: one Gaussian per 2nd pixel of 8 training views, placed on the
   true surface from the generator's depth and then perturbed (positions by 1% of the scene's depth
   range, colours by noise), refined with the short preset; held-out PSNR / SSIM every --eval-every steps.
3. The classic baseline on the same scene: graphdeco's schedule from a sparse SfM-like point cloud
   (2,000 surface points, the classic preset scaled to --classic-steps, as `python -m refine
   --init sfm --steps N` runs it), its held-out PSNR against optimisation time, for comparison
   with the post-optimised prediction.
Held-out views are every 8th frame, as in the evaluation protocol; times exclude evaluation.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from data.procedural import ProceduralConfig, generate_scene
from inference.reconstruct import HOLDOUT_EVERY
from model.cameras import Cameras
from model.gaussians import Gaussians
from model.render.sh import SH_C0
from refine import RefineConfig, from_depth, from_points, refine


def scene_at(size: int, frames: int, seed: int = 0):
    s = generate_scene(ProceduralConfig(num_frames=frames, width=size, height=size, seed=seed, shadows=False))
    return s, Cameras(s.intrinsics, s.c2w, size, size)


def prediction_like(s, cams: Cameras, views: list[int], stride: int, count: int | None = None,
                    seed: int = 0) -> Gaussians:
    g = from_depth(s.images[views], s.depth[views], cams[views], stride=stride)
    gen = torch.Generator().manual_seed(seed)
    if count is not None:
        g = g.index(torch.randperm(g.count, generator=gen)[:count])
    spread = float(s.depth.max() - s.depth.min())
    g.means += 0.01 * spread * torch.randn(g.means.shape, generator=gen)
    g.sh[:, 0] += 0.3 * torch.randn(g.sh[:, 0].shape, generator=gen)
    return g


def surface_points(s, cams: Cameras, views: list[int], count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` points on the true surfaces seen by `views`, with their pixels' colours in [0, 1]:
    points [count, 3], colours [count, 3] (a structure-from-motion cloud without its noise)."""
    dense = from_depth(s.images[views], s.depth[views], cams[views], stride=1)
    pick = torch.randperm(dense.count, generator=torch.Generator().manual_seed(seed))[:count]
    return dense.means[pick], (0.5 + SH_C0 * dense.sh[pick, 0]).clamp(0, 1)


def sfm_like(s, cams: Cameras, views: list[int], count: int, seed: int = 0) -> Gaussians:
    """graphdeco's initialisation from a sparse point cloud on the true surfaces."""
    return from_points(*surface_points(s, cams, views, count, seed))


def speed(size: int, counts: list[int], steps: int) -> None:
    s, cams = scene_at(size, 4)
    print(f"== speed: {size}x{size}, short preset, backend cpu, {torch.get_num_threads()} threads")
    for count in counts:
        per_view = -(-count // 4)
        stride = max(1, int((size * size / per_view) ** 0.5))
        start = prediction_like(s, cams, [0, 1, 2, 3], stride, count=count)
        config = RefineConfig.preset("short", steps=steps, backend="cpu")
        refine(start, s.images, cams, config.replace(steps=2), progress=False)  # warm-up (kernel load)
        _, history = refine(start, s.images, cams, config, progress=False)
        print(f"{start.count:>7d} Gaussians: {steps / history.seconds[-1]:6.2f} it/s "
              f"({1000 * history.seconds[-1] / steps:.0f} ms/step)")


def curve(name: str, history) -> None:
    print(f"-- {name}")
    print(f"{'step':>6} {'seconds':>8} {'Gaussians':>9} {'PSNR':>7} {'SSIM':>7}")
    for e in history.evals:
        print(f"{e['step']:>6d} {e['seconds']:>8.1f} {e['count']:>9d} {e['psnr']:>7.2f} {e['ssim']:>7.4f}")


def quality(size: int, frames: int, pred_steps: int, classic_steps: int, eval_every: int) -> None:
    s, cams = scene_at(size, frames)
    held = list(range(0, frames, HOLDOUT_EVERY))
    train = [i for i in range(frames) if i not in held]
    inputs = train[:: max(1, len(train) // 8)][:8]
    print(f"== quality: {size}x{size}, {frames} frames, held out {held}, backend cpu")
    start = prediction_like(s, cams, inputs, stride=2)
    config = RefineConfig.preset("short", steps=pred_steps, backend="cpu", eval_every=eval_every)
    _, history = refine(start, s.images, cams, config, holdout=held, progress=False)
    curve(f"prediction-like start ({start.count} Gaussians), short preset", history)

    points = sfm_like(s, cams, inputs, 2000)
    config = RefineConfig.preset("classic", steps=classic_steps, backend="cpu", eval_every=eval_every)
    _, history = refine(points, s.images, cams, config, holdout=held, progress=False)
    curve(f"classic from {points.count} SfM-like points, graphdeco's schedule scaled to {classic_steps} steps", history)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed-size", type=int, default=256)
    p.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--speed-steps", type=int, default=10)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--pred-steps", type=int, default=300)
    p.add_argument("--classic-steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=100)
    args = p.parse_args(argv)
    print("command: python -m bench.bench_refine " + " ".join(sys.argv[1:] if argv is None else argv))
    tic = time.time()
    speed(args.speed_size, args.counts, args.speed_steps)
    quality(args.size, args.frames, args.pred_steps, args.classic_steps, args.eval_every)
    print(f"total {time.time() - tic:.0f} s")


if __name__ == "__main__":
    main()
