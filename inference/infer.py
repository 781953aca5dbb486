"""Reconstruct a scene from posed views: Gaussians (PLY), held-out renders, metrics and a video.

    longlrm-infer                                    # the embedded demo: a procedural room, shipped model
    longlrm-infer --views SCENE_DIR --checkpoint CKPT --eval --video --out results/scene
    longlrm-infer --check [--checkpoint CKPT] [--device cuda] [--precision bf16]   # what will run here

(`python infer.py ...` in a source checkout.)

SCENE_DIR may be a DL3DV / nerfstudio folder (transforms.json), the official Long-LRM processed
format (opencv_cameras.json) or a COLMAP sparse model; or, without poses, a folder of photos or a
video, whose poses are computed with COLMAP into --out first. See README.md for every option.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from inference.cli import (
    add_device_options,
    add_preprocessing_options,
    check_options,
    preprocessing_options,
    resolve_device,
    run_command,
)
from view.options import add_viewing_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--views", type=Path, help="scene folder, folder of photos or video file; default: the embedded "
                   "procedural demo scene")
    p.add_argument("--checkpoint", type=Path, help="our .safetensors / run directory, or the official Long-LRM .pt; "
                   "default: the shipped demo checkpoint")
    p.add_argument("--num-views", type=int, help="input views (16, 32 and 64 are typical; default: what the "
                   "checkpoint was trained with, else 32)")
    p.add_argument("--resolution", help="short side (e.g. 544) or WxH (e.g. 960x544), multiples of 16; "
                   "default: the checkpoint's training resolution")
    add_preprocessing_options(p)
    p.add_argument("--refine-steps", type=int, default=0, help="per-scene 3DGS refinement steps after prediction")
    p.add_argument("--robust", action="store_true", help="robust (SpotlessSplats) refinement for transient objects")
    p.add_argument("--native-sh", action="store_true", help="write gaussians.ply at the model's own SH degree "
                   "instead of padding it to degree 3 (45 f_rest fields), which graphdeco's loader and most viewers "
                   "expect")
    p.add_argument("--out", type=Path, help="output folder (default: outputs/<scene>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out (files there "
                   "with our output names are replaced; nothing else is touched)")
    add_device_options(p)
    p.add_argument("--check", action="store_true", help="print what will run here (torch, CUDA, GPU, optional "
                   "CUDA packages, the implementation each operation of --checkpoint's network takes and why) and exit")
    p.add_argument("--video", action="store_true", help="render video.mp4 along a smooth path through the inputs")
    p.add_argument("--eval", action="store_true", help="hold out every 8th frame and report PSNR/SSIM/LPIPS on it")
    p.add_argument("--no-lpips", action="store_true", help="skip the LPIPS metric")
    add_viewing_options(p, "gaussians")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    capture = p.add_argument_group("photos or a video without poses (computed with COLMAP into --out)")
    capture.add_argument("--max-frames", type=int, help="frames kept for SfM, spread over the video and the "
                         "sharpest of their neighbourhood (default 150)")
    capture.add_argument("--frame-size", type=int, help="longest side of the kept frames in pixels (default 960)")
    capture.add_argument("--colmap-model", type=int, help="which model of a COLMAP scene with several (sparse/N); "
                         "default: the one with the most registered images")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # --check prints every decision itself; the run's once-per-choice log lines would repeat them
    return run_command(run, args, logging.WARNING if args.check else logging.INFO)


def run(args: argparse.Namespace) -> int:
    import torch

    from data.view_sampling import read_input_index
    from inference.outputs import staged_outputs
    from inference.reconstruct import Options, reconstruct, use_input_index
    from inference.timer import StageTimer
    from model.cpu_allocator import keep_freed_memory
    from model.pretrained import DEMO_CHECKPOINT, load_model
    from view.options import viewing_options

    if args.check:
        from inference.check import report
        from model.precision import resolve_precision

        device = resolve_device(args.device)
        loaded = load_model(args.checkpoint or DEMO_CHECKPOINT, "cpu")
        print(report(loaded.model, device, resolve_precision(args.precision, device), str(loaded.path)))
        return 0
    torch.set_flush_denormal(True)
    keep_freed_memory()
    demo = args.views is None
    check_options(args)
    device = resolve_device(args.device)
    if not demo and not args.views.exists():
        raise FileNotFoundError(f"--views {args.views} does not exist; pass a scene folder")
    formats, address = viewing_options(args.export, args.view)

    timer = StageTimer(device)  # every second of the run goes to a stage
    with timer.stage("open scene"):
        if demo:
            from inference.demo import demo_scene

            print("no --views given: reconstructing the embedded procedural demo scene with the shipped checkpoint")
            scene = demo_scene()
        else:
            from data.open_scene import needs_capture, open_scene

            capture = needs_capture(args.views)  # photos or a video: poses computed once --out exists
            scene = None if capture else open_scene(args.views, colmap_model=args.colmap_model)
            if scene is not None and args.input_index:
                use_input_index(scene, read_input_index(args.input_index), args.input_index)
    name = scene.scene_id if scene is not None else args.views.stem
    out_dir = args.out or Path("outputs") / f"{_slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    with staged_outputs(out_dir, allow_existing=args.overwrite) as stage:  # checked before the expensive part
        with timer.stage("load checkpoint"):
            loaded = load_model(args.checkpoint or DEMO_CHECKPOINT, device)
        print(f"checkpoint: {loaded.path} ({loaded.source}, {sum(p.numel() for p in loaded.model.parameters()) / 1e6:.2f}"
              f"M parameters) on {device}")
        num_views = args.num_views or loaded.num_views or 32
        if scene is None:  # frames and poses go straight into out_dir: kept for reuse whatever follows
            scene = _capture(args, out_dir, timer)
        options = Options(num_views=num_views, resolution=args.resolution, holdout=args.eval or demo,
                          **preprocessing_options(args), refine_steps=args.refine_steps,
                          robust=args.robust, video=args.video, lpips=not args.no_lpips, precision=args.precision,
                          ply_sh_degree=None if args.native_sh else 3)
        result = reconstruct(scene, loaded, options, out_dir=stage, device=device, timer=timer)
    result.out_dir = out_dir
    _summary(result, timer.elapsed())
    del result  # its Gaussians: what follows reads the written files
    if formats:
        from model.ply import load_ply
        from view.export import export

        for path in export(load_ply(out_dir / "gaussians.ply"), out_dir / "gaussians", formats, args.overwrite):
            print(f"exported {path}")
    if address:
        from view import serve

        serve(out_dir, *address)
    return 0


def _capture(args: argparse.Namespace, out_dir: Path, timer):
    """Frames and COLMAP poses for photos or a video, into out_dir (all or nothing: data/capture).
    The timer gets the capture's steps (frames, features, matching, mapping), the rest as opening the scene."""
    from data.capture import CaptureConfig
    from data.open_scene import open_scene

    settings = {"max_frames": args.max_frames, "frame_size": args.frame_size}
    config = CaptureConfig(**{k: v for k, v in settings.items() if v is not None})
    with timer.stage("open scene"):
        scene = open_scene(args.views, capture_dir=out_dir, capture=config)
    steps = scene.extras.get("capture_seconds", {})
    timer.seconds["open scene"] -= sum(steps.values())
    timer.seconds.update(steps)
    return scene


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:60] or "scene"


def _summary(result, total: float) -> None:
    print(f"\nviews: {result.num_inputs} inputs, {result.num_targets} held out, at "
          f"{result.size.width}x{result.size.height}; network in {result.precision}")
    refined = "" if result.refined is None else f", {result.refined:,} after refinement"
    print(f"Gaussians: {result.predicted:,} predicted, {result.kept:,} kept{refined}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()) + f" (total {total:.1f})")
    for label, metrics in (("held-out", result.metrics), ("after refinement", result.refined_metrics)):
        if metrics:
            lp = f"{metrics['lpips']:.3f}" if metrics.get("lpips") is not None else "n/a"
            print(f"{label}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, LPIPS {lp}")
    print(f"outputs in {result.out_dir}/: gaussians.ply, cameras.json, metrics.json"
          + (", renders/" if result.num_targets else "") + (", video.mp4" if (result.out_dir / "video.mp4").exists() else ""))


if __name__ == "__main__":
    sys.exit(main())
