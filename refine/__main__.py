"""python -m refine: polish a Gaussian PLY against a scene's posed photos.

    python -m refine --ply scene.ply --views SCENE_DIR --out OUT_DIR --steps 500 [--robust]

The PLY must live in the scene's world frame (the one its cameras are given in). Every 8th frame
(0, 8, 16, ...) is held out: never trained on, and scored before and after. Writes OUT_DIR/refined.ply
and OUT_DIR/metrics.json; refuses a non-empty OUT_DIR unless --overwrite, and never writes over the
input PLY.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

from data.open_scene import open_scene
from model.cameras import Cameras
from model.cpu_allocator import keep_freed_memory
from model.ply import load_ply, save_ply
from model.typed_config import apply_overrides, from_dict

from .config import PRESETS, RefineConfig
from .trainer import refine

HOLDOUT_EVERY = 8


def load_views(scene_dir: Path) -> tuple[Tensor, Cameras]:
    """All frames of a scene folder: (images [V, H, W, 3], Cameras [V])."""
    scene = open_scene(scene_dir)
    return scene.load_views(range(len(scene)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m refine", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ply", type=Path, required=True, help="Gaussians to refine (graphdeco PLY layout)")
    p.add_argument("--views", type=Path, required=True, help="scene folder with the posed images")
    p.add_argument("--out", type=Path, required=True, help="output folder for refined.ply and metrics.json")
    p.add_argument("--steps", type=int, help="optimisation steps (default: the preset's)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="short",
                   help="short: post-optimisation of a prediction; classic: graphdeco's 30k schedule")
    p.add_argument("--robust", action="store_true", help="SpotlessSplats masks for transient distractors")
    p.add_argument("--backend", default="auto", help="renderer backend: auto, cpu, torch or gsplat")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any RefineConfig field, e.g. --set densify=true (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> RefineConfig:
    values = dataclasses.asdict(RefineConfig.preset(args.preset))
    values.update(robust=args.robust or values["robust"], backend=args.backend)
    if args.steps is not None:
        values["steps"] = args.steps
    values = apply_overrides(values, args.overrides)
    if isinstance(values["background"], list):
        values["background"] = tuple(values["background"])
    return from_dict(RefineConfig, values)


def check_output(out: Path, ply: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"--out {out} is not empty; choose another folder or pass --overwrite")
    if (out / "refined.ply").resolve() == ply.resolve():
        raise SystemExit(f"--out {out} would overwrite the input {ply}; choose another folder")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    check_output(args.out, args.ply, args.overwrite)
    keep_freed_memory()
    gaussians = load_ply(args.ply)
    images, cameras = load_views(args.views)
    holdout = list(range(0, len(images), HOLDOUT_EVERY)) if len(images) > 1 else None
    print(f"refine: {gaussians.count} Gaussians, {len(images)} views {cameras.width}x{cameras.height} "
          f"({len(holdout or [])} held out), {config.steps} steps on {args.device}", file=sys.stderr)
    refined, history = refine(gaussians.to(args.device), images.to(args.device), cameras.to(args.device),
                              config, holdout=holdout, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    save_ply(refined.to("cpu"), args.out / "refined.ply")
    report = {
        "input_ply": str(args.ply),
        "views": str(args.views),
        "holdout": holdout or [],
        "before": history.evals[0] if history.evals else None,
        "after": history.evals[-1] if history.evals else None,
        "gaussians": {"before": gaussians.count, "after": refined.count},
        "seconds": history.seconds[-1] if history.seconds else 0.0,
        "spatial_lr_scale": history.spatial_lr_scale,
        "config": dataclasses.asdict(config),
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    if history.evals:
        b, a = report["before"], report["after"]
        print(f"held-out PSNR {b['psnr']:.2f} -> {a['psnr']:.2f} dB, SSIM {b['ssim']:.4f} -> {a['ssim']:.4f}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
