"""python -m refine: per-scene 3DGS optimisation, from a prediction or from scratch, scored like infer.py.

    python -m refine --views SCENE --ply results/scene/gaussians.ply --out OUT --steps 500 [--robust]
    python -m refine --views SCENE --init sfm --out OUT [--steps 30000]      # graphdeco's 3DGS recipe
    python -m refine --views SCENE --init random --out OUT --view                # then show it in the browser

The views are infer.py's: the same input frames, held-out frames (every 8th) and resolution. For a
PLY in an infer.py output folder the defaults are what that run used; otherwise 32 inputs at short
side 540 (--num-views, --resolution change them). --init sfm starts from the scene's COLMAP points,
--init random from random points in the input views' frusta, both with graphdeco's full schedule
(the classic preset) scaled to --steps; --ply starts from those Gaussians (in the scene's world
frame) with the short preset. Writes OUT/refined.ply (the scene's world frame, SH degree 3),
OUT/renders/ (held-out views: start, refined and ground truth), OUT/metrics.json (PSNR, SSIM, LPIPS on
8-bit renders, as infer.py), and OUT/cameras.json with OUT/inputs/ as infer.py writes them, so
`python -m view OUT` (or --view) shows the result with its cameras. Every option is checked before any
work; the outputs appear all together or not at all. Refuses a non-empty OUT unless --overwrite, and
the folder of the input PLY.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from inference.cli import resolve_device, run_command
from view.options import add_viewing_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from model.render.api import BACKENDS

    from .config import PRESETS

    p = argparse.ArgumentParser(prog="python -m refine", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=Path, required=True, help="scene folder with the posed images")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--ply", type=Path, help="Gaussians to refine (graphdeco PLY layout, the scene's world frame), "
                       "or an infer.py / refinement output folder holding them")
    start.add_argument("--init", choices=["random", "sfm"], help="classic 3DGS from scratch: from random points or "
                       "from the scene's COLMAP points")
    p.add_argument("--out", type=Path, required=True, help="output folder for refined.ply, renders/, metrics.json, "
                   "cameras.json and inputs/")
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
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="renderer backend (default: gsplat on "
                   "CUDA, the C++ kernel on the CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any RefineConfig field after scaling, e.g. --set densify_until=2000 (repeatable; "
                   "values as in training's key=value overrides, checked against the field's type)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out (files there "
                   "with our output names are replaced; nothing else is touched)")
    p.add_argument("--no-lpips", action="store_true", help="skip the LPIPS metric")
    add_viewing_options(p, "refined")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    """The preset scaled to --steps, then --robust / --backend, then each --set KEY=VALUE, type-checked
    by the same parser as training's overrides (model/typed_config.py)."""
    from model.typed_config import load_config

    from .config import RefineConfig

    preset = args.preset or ("short" if args.ply else "classic")
    config = RefineConfig.preset(preset, steps=args.steps)
    config = config.replace(robust=args.robust or config.robust, backend=args.backend)
    return load_config(RefineConfig, None, args.overrides, base=config)


def check_options(args: argparse.Namespace) -> None:
    """The numeric options, checked before any work."""
    from inference.reconstruct import parse_resolution

    if args.steps is not None and args.steps <= 0:
        raise ValueError(f"--steps must be a positive number of optimisation steps, got {args.steps}")
    if args.num_views is not None and args.num_views < 2:
        raise ValueError(f"--num-views must be at least 2, got {args.num_views}")
    if args.resolution:
        parse_resolution(args.resolution)
    if args.init_points is not None and (args.init != "random" or args.init_points < 2):
        raise ValueError("--init-points needs --init random and a count of at least 2")


def input_ply(path: Path) -> Path:
    """The PLY named by --ply: the file itself, or the one in an infer.py or refinement output folder."""
    from view.reconstruction import find_ply

    try:
        return find_ply(path)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"--ply {err}") from None


def load_start(ply: Path):
    """The Gaussians of --ply, read before any view is decoded: a complete, finite, non-empty PLY."""
    from model.ply import load_ply

    try:
        gaussians = load_ply(ply)
    except ValueError as err:
        raise ValueError(f"--ply: {err}; pass a 3DGS PLY as infer.py or graphdeco's 3DGS writes it (a damaged or "
                         "truncated file must be written again)") from None
    if gaussians.count == 0:
        raise ValueError(f"--ply {ply} holds no Gaussians; pass a reconstruction that has some, or start from "
                         "scratch with --init random or --init sfm")
    return gaussians


def check_not_input_folder(out: Path, ply: Path | None) -> None:
    """--out may not be the folder of the input PLY: its PLY, metrics.json and cameras.json are the input's."""
    if ply is not None and out.resolve() == ply.parent.resolve():
        raise FileExistsError(f"--out {out} holds the input {ply.name}, whose metrics.json and cameras.json "
                              "refinement would replace; choose another folder")


def choose_protocol(args: argparse.Namespace, ply: Path | None):
    from .protocol import Protocol, recorded_protocol

    base = (recorded_protocol(ply) if ply else None) or Protocol()
    return Protocol(num_views=args.num_views or base.num_views, resolution=args.resolution or base.resolution,
                    holdout=base.holdout and not args.no_holdout, resample=base.resample)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    import torch

    from data.normalize import denormalize_gaussians, transform_gaussians
    from data.open_scene import open_scene
    from inference.evaluation import mean_metrics
    from inference.outputs import save_png, staged_outputs, write_json
    from inference.reconstruct import cameras_json, score_views
    from inference.timer import StageTimer
    from model.cpu_allocator import keep_freed_memory
    from model.ply import save_ply
    from view.options import viewing_options

    from .init import from_points, random_init
    from .protocol import protocol_sample, training_views
    from .trainer import refine

    check_options(args)
    config = build_config(args)
    device = resolve_device(args.device)
    if {"gsplat": "cuda", "cpu": "cpu"}.get(config.backend, device.type) != device.type:
        raise ValueError(f"--backend {config.backend} does not render on {device.type}; use --backend auto")
    if not args.views.exists():
        raise FileNotFoundError(f"--views {args.views} does not exist; pass a scene folder")
    ply = input_ply(args.ply) if args.ply else None
    check_not_input_folder(args.out, ply)
    formats, address = viewing_options(args.export, args.view)
    given = load_start(ply) if ply else None
    protocol = choose_protocol(args, ply)
    torch.set_flush_denormal(True)
    keep_freed_memory()

    timer = StageTimer(device)
    with timer.stage("load views"):
        scene = open_scene(args.views)
    with staged_outputs(args.out, allow_existing=args.overwrite) as stage:  # checked before the expensive part
        with timer.stage("load views"):
            sample = protocol_sample(scene, protocol)
            images, cameras, curve_views = training_views(sample, with_held_out=config.eval_every > 0)
        with timer.stage("init"):
            m = sample.normalization  # world -> the sample's normalised frame
            if given is not None:
                start = transform_gaussians(given, m)
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
              f"{args.preset or ('short' if ply else 'classic')} schedule{' (robust)' if config.robust else ''} "
              f"on {device}", file=sys.stderr)

        names = [Path(scene.names[int(f)]).stem for f in sample.target_indices]
        renders = stage / "renders"
        target_cams = sample.target_cameras.to(device)
        if holdout:
            renders.mkdir()
        before = {}
        if holdout and ply is not None:
            before = score_views(start.to(device), target_cams, sample.target_images,
                                 [renders / f"{n}_start.png" for n in names], not args.no_lpips, config.backend, timer,
                                 "held-out views, start")
        with timer.stage("refine"):
            refined, history = refine(start.to(device), images.to(device), cameras.to(device), config,
                                      holdout=curve_views, progress=not args.quiet)
        after = {}
        if holdout:
            after = score_views(refined, target_cams, sample.target_images,
                                [renders / f"{n}_refined.png" for n in names], not args.no_lpips, config.backend,
                                timer, "held-out views, refined")
        with timer.stage("save"):
            world = denormalize_gaussians(refined.to("cpu"), sample.normalization)
            save_ply(world, stage / "refined.ply")
            exported = []
            if formats:
                from view.export import export

                exported = export(world, stage / "refined", formats)
            # What the viewer shows beside the Gaussians: the cameras and their images, as infer.py saves them.
            write_json(cameras_json(scene, sample), stage / "cameras.json")
            (stage / "inputs").mkdir()
            for f, image in zip(sample.input_indices, sample.input_images):
                save_png(image, stage / "inputs" / f"{Path(scene.names[int(f)]).stem}.png")
            for name, image in zip(names, sample.target_images):
                save_png(image, renders / f"{name}_gt.png")
        report = {
            "views": str(args.views),
            "start": origin,
            "protocol": {"num_inputs": len(sample.input_images), "num_targets": holdout, "width": width,
                         "height": height, "resample": protocol.resample,
                         "inputs": [scene.names[int(f)] for f in sample.input_indices],
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
        write_json(report, stage / "metrics.json")
    _summary(report, args.out)
    for path in exported:
        print(f"exported {args.out / path.name}")
    if address:
        from view import serve

        serve(args.out, *address)
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
    print(f"outputs in {out}/: refined.ply, cameras.json, inputs/, metrics.json" + (", renders/" if report["after"] else ""))


if __name__ == "__main__":
    sys.exit(main())
