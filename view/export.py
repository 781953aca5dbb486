"""Gaussians -> the files web splat viewers open: antimatter15's `.splat` and PlayCanvas' compressed PLY.

    python -m view.export results/scene/gaussians.ply --format splat,compressed-ply [--out DIR]

The encoders are gsplat's (`gsplat.export_splats`, pure PyTorch, so they run without CUDA):
- `splat`: 32 bytes per Gaussian (position and linear scales as 3 x float32, RGBA as 4 x uint8 with
  the degree-0 colour and the opacity, the unit wxyz quaternion as 4 x uint8 mapped from [-1, 1]);
  no view-dependent colour. antimatter15's splat viewer and most web viewers read it.
- `compressed-ply`: chunks of 256 Morton-ordered Gaussians with per-chunk min/max, positions and
  log-scales packed 11-10-11 bits, the quaternion as 2 + 3 x 10 bits, colour and opacity as 4 x 8 bits,
  higher SH bands as uint8. SuperSplat and the PlayCanvas engine read it. Its encoder leaves out
  Gaussians with opacity at or below 1/255; the count written is reported.
Files are written next to each other as `<stem>.splat` and `<stem>.compressed.ply`; an existing file is
never replaced unless asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from model.gaussians import Gaussians

# name -> (suffix of the written file, gsplat's format name)
FORMATS = {"splat": (".splat", "splat"), "compressed-ply": (".compressed.ply", "ply_compressed")}
COMPRESSED_MIN_OPACITY = 1 / 255  # gsplat's compressed writer drops Gaussians at or below this opacity


def parse_formats(text: str) -> list[str]:
    """'splat,compressed-ply' -> ['splat', 'compressed-ply'], in the given order, without repeats."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format {', '.join(unknown) or repr(text)}; choose from "
                         f"{', '.join(FORMATS)} (comma-separated)")
    return names


def export_paths(stem: Path, formats: list[str]) -> list[Path]:
    """Where `export` writes each format: `<stem>.splat`, `<stem>.compressed.ply`."""
    return [stem.with_name(stem.name + FORMATS[name][0]) for name in formats]


def encode(gaussians: Gaussians, fmt: str) -> bytes:
    """One scene's Gaussians (means [N, 3]) in one of FORMATS, as the bytes of the file."""
    from gsplat import export_splats

    g = gaussians.detach().to("cpu")
    return export_splats(g.means.float(), g.log_scales.float(), g.quats.float(), g.opacity_logits.float(),
                         g.sh[:, :1].float(), g.sh[:, 1:].float(), format=FORMATS[fmt][1])


def written_count(gaussians: Gaussians, fmt: str) -> int:
    """How many Gaussians the file of `fmt` holds."""
    if fmt == "compressed-ply":
        return int((gaussians.opacities > COMPRESSED_MIN_OPACITY).sum())
    return gaussians.count


def export(gaussians: Gaussians, stem: Path, formats: list[str], overwrite: bool = False) -> list[Path]:
    """Write `gaussians` in each format next to `stem` (see `export_paths`), each file atomically.

    Refuses (FileExistsError) before writing anything when a target exists and `overwrite` is off.
    """
    paths = export_paths(stem, formats)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                              "another --out")
    if gaussians.count == 0:
        raise ValueError("there are no Gaussians to export")
    for fmt, path in zip(formats, paths):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(encode(gaussians, fmt))
        os.replace(tmp, path)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m view.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ply", type=Path, help="a 3DGS PLY in the graphdeco layout (e.g. infer.py's gaussians.ply)")
    p.add_argument("--format", default="splat,compressed-ply",
                   help=f"comma-separated, from: {', '.join(FORMATS)} (default: both)")
    p.add_argument("--out", type=Path, help="folder for the files (default: next to the PLY)")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same name")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from model.ply import load_ply

        formats = parse_formats(args.format)
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise NotADirectoryError(f"--out {args.out} is a file; choose a folder")
        gaussians = load_ply(args.ply)
        stem = (args.out or args.ply.parent) / args.ply.name.removesuffix(".ply")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
        paths = export(gaussians, stem, formats, args.overwrite)
    except (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    for fmt, path in zip(formats, paths):
        print(f"{path}: {written_count(gaussians, fmt):,} of {gaussians.count:,} Gaussians, "
              f"{path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
