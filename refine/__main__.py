"""python -m refine: per-scene 3DGS optimisation, from a prediction or from scratch, scored like infer.py.

    python -m refine --views SCENE --ply results/scene/gaussians.ply --out OUT --steps 500 [--robust]
    python -m refine --views SCENE --init sfm --out OUT [--steps 30000]      # graphdeco's 3DGS recipe
    python -m refine --views SCENE --init random --out OUT

The views are infer.py's: the same input frames, held-out frames (every 8th) and resolution. For a
PLY in an infer.py output folder the defaults are what that run used; otherwise 32 inputs at short
side 540 (--num-views, --resolution change them). --init sfm starts from the scene's COLMAP points,
--init random from random points in the input views' frusta, both with graphdeco's full schedule
(the classic preset) scaled to --steps; --ply starts from those Gaussians (in the scene's world
frame) with the short preset. Writes OUT/refined.ply (the scene's world frame, SH degree 3),
OUT/renders/ (held-out views) and OUT/metrics.json (PSNR, SSIM, LPIPS on 8-bit renders, as infer.py).
Refuses a non-empty OUT unless --overwrite, and never writes over the input PLY.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from infer import _device, run_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .config import PRESETS

    p = argparse.ArgumentParser(prog="python -m refine", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=Path, required=True, help="scene folder with the posed images")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--ply", type=Path, help="Gaussians to refine (graphdeco PLY layout, the scene's world frame), "
                       "or an infer.py output folder holding gaussians.ply")
    start.add_argument("--init", choices=["random", "sfm"], help="classic 3DGS from scratch: from random points or "
                       "from the scene's COLMAP points")
    p.add_argument("--out", type=Path, required=True, help="output folder for refined.ply, renders/ and metrics.json")
    p.add_argument("--steps", type=int, help="optimisation steps; the preset's schedule is scaled to them "
                   "(default: the preset's, 500 short or 30000 classic)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="short: post-optimisation of a prediction (default with "
                   "--ply); classic: graphdeco's schedule with densification (default with --init)")
    p.add_argument("--num-views", type=int, help="input views, chosen as infer.py does (default: the infer.py run's, "
                   "else 32)")
    p.add_argument("--resolution", help="short side or WxH, multiples of 16 (default: the infer.py run's, else 540)")
    p.add_argument("--no-holdout", action="store_true", help="train on the chosen inputs without held-out views")
    p.add_argument("--init-points", type=int, help="number of random points for --init random (default: one per 16 "
                   "input pixels, at most 100000)")
    p.add_argument("--robust", action="store_true", help="SpotlessSplats masks for transient distractors")
    p.add_argument("--backend", default="auto", help="renderer backend: auto, cpu, torch or gsplat")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any RefineConfig field after scaling, e.g. --set densify_until=2000 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.add_argument("--no-lpips", action="store_true", help="skip the LPIPS metric")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    from model.typed_config import apply_overrides, from_dict

    from .config import RefineConfig

    preset = args.preset or ("short" if args.ply else "classic")
    config = RefineConfig.preset(preset, steps=args.steps)
    values = dataclasses.asdict(config.replace(robust=args.robust or config.robust, backend=args.backend))
    values = apply_overrides(values, args.overrides)
    if isinstance(values["background"], list):
        values["background"] = tuple(values["background"])
    return from_dict(RefineConfig, values)


def check_output(out: Path, ply: Path | None, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} is not empty; choose another folder or pass --overwrite")
    if ply is not None and (out / "refined.ply").resolve() == ply.resolve():
        raise FileExistsError(f"--out {out} would overwrite the input {ply}; choose another folder")


def input_ply(path: Path) -> Path:
    """The PLY named by --ply: the file itself, or gaussians.ply in an infer.py output folder."""
    ply = path / "gaussians.ply" if path.is_dir() else path
    if not ply.is_file():
        raise FileNotFoundError(f"--ply {path}: no PLY file there; pass a .ply file or an infer.py output folder")
    return ply


def choose_protocol(args: argparse.Namespace, ply: Path | None):
    from inference.reconstruct import parse_resolution

    from .protocol import Protocol, recorded_protocol

    base = (recorded_protocol(ply) if ply else None) or Protocol()
    if args.num_views is not None and args.num_views < 2:
        raise ValueError(f"--num-views must be at least 2, got {args.num_views}")
    if args.resolution:
        parse_resolution(args.resolution)  # a bad value fails here, before any work
    return Protocol(num_views=args.num_views or base.num_views, resolution=args.resolution or base.resolution,
                    holdout=base.holdout and not args.no_holdout, resample=base.resample)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    import torch

    from data.normalize import denormalize_gaussians, transform_gaussians
    from data.open_scene import open_scene
    from inference.evaluation import mean_metrics
    from inference.outputs import write_json
    from inference.reconstruct import score_views
    from inference.timer import StageTimer
    from model.cpu_allocator import keep_freed_memory
    from model.ply import load_ply, save_ply

    from .init import from_points, random_init
    from .protocol import protocol_sample, training_views
    from .trainer import refine

    config = build_config(args)
    if args.init_points is not None and (args.init != "random" or args.init_points < 2):
        raise ValueError("--init-points needs --init random and a count of at least 2")
    device = _device(args.device)
    if not args.views.exists():
        raise FileNotFoundError(f"--views {args.views} does not exist; pass a scene folder")
    ply = input_ply(args.ply) if args.ply else None
    protocol = choose_protocol(args, ply)
    check_output(args.out, ply, args.overwrite)
    torch.set_flush_denormal(True)
    keep_freed_memory()

    timer = StageTimer(device)
    with timer.stage("load views"):
        scene = open_scene(args.views)
        sample = protocol_sample(scene, protocol)
        images, cameras, curve_views = training_views(sample, with_held_out=config.eval_every > 0)
    with timer.stage("init"):
        m = sample.normalization  # world -> the sample's normalised frame
        if ply is not None:
            start = transform_gaussians(load_ply(ply), m)
        elif args.init == "sfm":
            from data.sparse_points import scene_points

            points, colors = scene_points(scene, args.views)
            start = from_points((points @ m[:3, :3].T + m[:3, 3]).float(), colors.float())
        else:
            start = random_init(sample.input_cameras, args.init_points,
                                generator=torch.Generator().manual_seed(config.seed))
    height, width = sample.input_images.shape[1:3]
    holdout = len(sample.target_images)
    origin = str(ply) if ply else f"{args.init} points"
    print(f"refine: {start.count:,} Gaussians from {origin}; {len(sample.input_images)} input views, "
          f"{holdout} held out, at {width}x{height}; {config.steps} steps of the "
          f"{args.preset or ('short' if ply else 'classic')} schedule{' (robust)' if config.robust else ''} on {device}",
          file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    names = [Path(scene.names[int(f)]).stem for f in sample.target_indices]
    target_cams = sample.target_cameras.to(device)
    if holdout:
        (args.out / "renders").mkdir(exist_ok=True)
    before = {}
    if holdout and ply is not None:
        before = score_views(start.to(device), target_cams, sample.target_images,
                             [args.out / "renders" / f"{n}_start.png" for n in names], not args.no_lpips,
                             config.backend, timer, "held-out views, start")
    with timer.stage("refine"):
        refined, history = refine(start.to(device), images.to(device), cameras.to(device), config,
                                  holdout=curve_views, progress=not args.quiet)
    after = {}
    if holdout:
        after = score_views(refined, target_cams, sample.target_images,
                            [args.out / "renders" / f"{n}_refined.png" for n in names], not args.no_lpips,
                            config.backend, timer, "held-out views, refined")
    with timer.stage("save"):
        save_ply(denormalize_gaussians(refined.to("cpu"), sample.normalization), args.out / "refined.ply")
    report = {
        "views": str(args.views),
        "start": origin,
        "protocol": {"num_inputs": len(sample.input_images), "num_targets": holdout, "width": width,
                     "height": height, "inputs": [scene.names[int(f)] for f in sample.input_indices],
                     "targets": [scene.names[int(f)] for f in sample.target_indices]},
        "before": mean_metrics(before) if before else None,
        "after": mean_metrics(after) if after else None,
        "per_view": [{"frame": scene.names[int(f)], **{k: v[i] for k, v in after.items()}}
                     for i, f in enumerate(sample.target_indices)],
        "gaussians": {"before": start.count, "after": refined.count},
        "events": history.events,
        "curve": history.evals,  # float-image PSNR / SSIM every eval_every steps (--set eval_every=N)
        "seconds": {**timer.seconds, "total": timer.elapsed()},
        "spatial_lr_scale": history.spatial_lr_scale,
        "config": dataclasses.asdict(config),
    }
    write_json(report, args.out / "metrics.json")
    _summary(report, args.out)
    return 0


def _summary(report: dict, out: Path) -> None:
    counts = report["gaussians"]
    print(f"Gaussians: {counts['before']:,} -> {counts['after']:,}")
    seconds = dict(report["seconds"])
    total = seconds.pop("total")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()) + f" (total {total:.1f})")
    for label in ("before", "after"):
        metrics = report[label]
        if metrics:
            lp = f"{metrics['lpips']:.3f}" if metrics.get("lpips") is not None else "n/a"
            print(f"held-out {label}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, LPIPS {lp}")
    print(f"outputs in {out}/: refined.ply, metrics.json" + (", renders/" if report["after"] else ""))


if __name__ == "__main__":
    sys.exit(main())
