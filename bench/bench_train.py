"""Training step time, peak memory and throughput of the `small` network on this machine.

    python -m bench.bench_train [--views 8 32] [--size 128] [--targets 8] [--steps 3] [--preset small]
                                [--no-checkpointing] [--perceptual] [--precision fp32 bf16] [--threads N]

One full optimizer step as the trainer runs it (train.step.forward_loss: network, per-view
checkpointed fp32 renders of the targets, loss, backward, gradient clipping, AdamW) on one scene
per step with V input views and T target views at size x size. Images are a procedural scene's
frames and cameras a forward-moving walk, normalised as the data pipeline does; data loading is not
included. Each view count runs in its own process so its peak resident memory (ru_maxrss, minus the
process's memory before the first step) is its own. The first step (warm-up) is not timed.
The network is freshly initialised: its Gaussians are small and distant, so rendering is cheaper
than for a trained model. --precision runs each view count in fp32 and under bf16 autocast (as the
trainer's `mixed_precision: bf16`), side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_batch(views: int, targets: int, size: int):
    from data.batch import collate
    from data.config import DataConfig, ResolutionConfig, ViewConfig
    from data.pipeline import SampleBuilder
    from data.procedural import ProceduralConfig, generate_scene
    from data.scene import Scene

    frames = max(views, targets) + 8
    ps = generate_scene(ProceduralConfig(num_frames=frames, width=size, height=size, path="walk", seed=0,
                                         shadows=False))
    scene = Scene.from_arrays("bench", ps.images, ps.intrinsics, ps.c2w)
    config = DataConfig(views=ViewConfig(num_inputs=views, num_targets=targets, min_frame_dist=None,
                                         max_frame_dist=None), resolution=ResolutionConfig(size=size))
    return collate([SampleBuilder(config)(scene, np.random.default_rng(0))])


def run_one(args) -> dict:
    from model.build import build_model
    from model.config import preset
    from model.losses import LossConfig, Losses
    from model.typed_config import load_config
    from train.config import TrainConfig
    from train.optim import build_optimizer
    from train.step import forward_loss

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    batch = make_batch(args.one, args.targets, args.size)
    config = load_config(TrainConfig, None, [f"loss.perceptual={0.5 if args.perceptual else 0}", "loss.depth=0"])
    model_config = preset(args.preset)
    model_config.checkpointing = not args.no_checkpointing
    torch.manual_seed(0)
    model = build_model(model_config).train()
    losses = Losses(config.loss if args.perceptual else LossConfig(perceptual=0, depth=0))
    optimizer = build_optimizer(model, 4e-4, (0.9, 0.95), 0.05)
    baseline = peak_rss_mb()
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = forward_loss(model, losses, batch, config)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    return {"views": args.one, "targets": args.targets, "size": args.size, "step_s": step_s,
            "views_per_s": (args.one + args.targets) / step_s, "peak_mb": peak_rss_mb() - baseline,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--no-checkpointing", action="store_true", help="no per-block activation checkpointing")
    parser.add_argument("--perceptual", action="store_true", help="include the LPIPS-VGG loss (weights needed)")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="fp32, and/or bf16 autocast for the network (rendering stays fp32)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one view count
    args = parser.parse_args()
    if args.one is not None:
        args.precision = args.precision[0]
        print(json.dumps(run_one(args)))
        return
    print("reproduce: python -m bench.bench_train " + " ".join(sys.argv[1:]))
    print(f"preset {args.preset}, {args.size}x{args.size}, {args.targets} targets, batch 1, "
          f"activation checkpointing {'off' if args.no_checkpointing else 'on'}, "
          f"perceptual loss {'on' if args.perceptual else 'off'}, {args.threads} threads, "
          f"median of {args.steps} steps, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'views':>5} {'precision':>9} {'step s':>8} {'views/s':>8} {'peak MB':>8}")
    flags = ["--size", str(args.size), "--targets", str(args.targets), "--steps", str(args.steps), "--preset",
             args.preset, "--threads", str(args.threads)] + ["--no-checkpointing"] * args.no_checkpointing \
        + ["--perceptual"] * args.perceptual
    for views in args.views:
        steps = {}
        for precision in args.precision:
            command = [sys.executable, "-m", "bench.bench_train", *flags, "--precision", precision, "--one", str(views)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))  # also sizes the rasterizer's OpenMP pool
            run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            result = json.loads(run.stdout.splitlines()[-1])
            steps[precision] = result["step_s"]
            print(f"{views:>5} {precision:>9} {result['step_s']:>8.2f} {result['views_per_s']:>8.1f} "
                  f"{result['peak_mb']:>8.0f}")
        if len(steps) == 2:
            print(f"{'':>5} bf16 step / fp32 step = {steps['bf16'] / steps['fp32']:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
