"""What the commands share: their options, the checks on them, the device, and how a refusal is reported.

Every command (`longlrm-infer`, `longlrm-evaluate`, `longlrm-refine`) runs through `run_command`, so bad
input reads the same everywhere: one `error: ...` line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_BAD_INPUT = 2


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                log_level: int = logging.INFO) -> int:
    """Run a command on parsed args: bad input gives one `error: ...` line and EXIT_BAD_INPUT (--debug: the traceback)."""
    logging.basicConfig(level=log_level, format="%(message)s")
    try:
        return run(args)
    except (ValueError, OSError, RuntimeError) as err:  # OSError: unreadable inputs, unwritable outputs
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def add_device_options(p: argparse.ArgumentParser) -> None:
    """Where the network runs and in what precision (model/precision.py)."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="the network's matmuls: auto = bf16 where the hardware has it natively (GPUs of compute "
                   "capability 8.0+, CPUs with AMX or AVX512-BF16), fp32 elsewhere; rendering always runs in fp32")


def resolve_device(name: str):
    """--device auto | cpu | cuda -> the torch.device; cuda without one is refused."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def add_preprocessing_options(p: argparse.ArgumentParser) -> None:
    """Options overriding what the checkpoint records (see README: the official checkpoint's defaults)."""
    p.add_argument("--scene-scale", type=float, help="pose normalisation scale (default: the checkpoint's; "
                   "1.35 for the official file)")
    p.add_argument("--resample", choices=["antialiased", "bilinear"], help="resize filter (default: the checkpoint's; "
                   "bilinear, as OpenCV INTER_LINEAR, for the official file)")
    p.add_argument("--input-index", type=Path, help="the authors' DL3DV-140 input lists "
                   "(dl3dv_fold_8_kmeans_input_idx.json): use their input frames for scenes it lists")
    p.add_argument("--keep-ratio", type=float, help="keep this share of the Gaussians, the most opaque ones "
                   "(default: the checkpoint's; 0.4 for the official file)")
    p.add_argument("--random-ratio", type=float, help="of the kept share, draw this part at random from the rest "
                   "(default: the checkpoint's; 0.1 for the official file)")
    p.add_argument("--prune-seed", type=int, help="seed of that random draw (default 0)")
    p.add_argument("--min-opacity", type=float, help="then drop Gaussians at or below this opacity (default: 0.001 "
                   "for the project's checkpoints, none for the official file)")


def check_options(args: argparse.Namespace) -> None:
    """Every option infer and evaluate share, checked before any work."""
    from inference.reconstruct import parse_resolution

    if args.num_views is not None and args.num_views < 2:
        raise ValueError(f"--num-views must be at least 2, got {args.num_views}")
    if args.refine_steps < 0:
        raise ValueError(f"--refine-steps must be >= 0, got {args.refine_steps}")
    if args.resolution:
        parse_resolution(args.resolution)
    ranges = {"--keep-ratio": (args.keep_ratio, "in (0, 1]", lambda v: 0 < v <= 1),
              "--random-ratio": (args.random_ratio, "in [0, 1]", lambda v: 0 <= v <= 1),
              "--min-opacity": (args.min_opacity, "in [0, 1) (an opacity of 1 or more would drop every Gaussian)",
                                lambda v: 0 <= v < 1),
              "--scene-scale": (args.scene_scale, "positive and finite", lambda v: 0 < v < math.inf)}
    for option, (value, allowed, ok) in ranges.items():
        if value is not None and not ok(value):  # NaN fails every comparison
            raise ValueError(f"{option} must be {allowed}, got {value}")
    if args.prune_seed is not None and not 0 <= args.prune_seed < 2**63:
        raise ValueError(f"--prune-seed must be in [0, 2**63), got {args.prune_seed}")
    if args.input_index is not None and not args.input_index.is_file():
        raise FileNotFoundError(f"--input-index {args.input_index} does not exist; pass the authors' "
                                "dl3dv_fold_8_kmeans_input_idx.json")


def preprocessing_options(args: argparse.Namespace) -> dict:
    """The Options fields that override the checkpoint's Preprocessing."""
    return {"resample": args.resample, "scene_scale": args.scene_scale, "keep_ratio": args.keep_ratio,
            "random_ratio": args.random_ratio, "prune_seed": args.prune_seed, "min_opacity": args.min_opacity}
