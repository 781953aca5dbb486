"""Write one procedural scene as a DL3DV folder:

    python -m data.procedural --out DIR --frames 120 --width 256 --height 144 --seed 0 [--path walk|forward|orbit]

Every frame is rendered in memory before any is written: a size or frame count that would not fit
in the available memory is refused before any work, naming a size that fits.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import psutil
from PIL import Image

from .config import PATH_KINDS, ProceduralConfig
from .generate import generate_scene
from .writer import check_output_dir, write_dl3dv_scene


def check_size(config: ProceduralConfig, available: int) -> None:
    """Refuse frames the readers would not open, or a scene that would not fit in `available` bytes,
    naming the largest frame size (same aspect ratio) that fits."""
    pixels = config.width * config.height
    if pixels > Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"{config.width}x{config.height} frames have {pixels:,} pixels, more than the "
                         f"{Image.MAX_IMAGE_PIXELS:,} image readers accept (PIL's decompression-bomb limit); "
                         "use a smaller --width and --height")
    needed = config.memory_bytes()
    if needed > available:
        scale = math.sqrt(min(config.max_pixels(available), Image.MAX_IMAGE_PIXELS) / pixels)
        width, height = int(config.width * scale), int(config.height * scale)
        hint = f"frames of at most about {width}x{height} fit, or " if min(width, height) >= 1 else ""
        raise ValueError(f"{config.num_frames} frames of {config.width}x{config.height} need about "
                         f"{needed / 2**30:.1f} GiB of memory and {available / 2**30:.1f} GiB are available; "
                         f"{hint}use fewer --frames")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.procedural", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="scene folder to create (must be empty or absent)")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path", default="walk", choices=PATH_KINDS, help="camera path kind")
    parser.add_argument("--objects", type=int, default=None, help="number of objects (default: random 4-10)")
    parser.add_argument("--fov", type=float, default=None, help="horizontal FoV in degrees (default: random 60-70)")
    parser.add_argument("--image-dir", default="images_4", help="image folder name inside the scene")
    parser.add_argument("--no-shadows", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads used for rendering")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder (files of the same names are replaced, none deleted)")
    args = parser.parse_args(argv)
    try:
        config = ProceduralConfig(num_frames=args.frames, width=args.width, height=args.height, path=args.path,
                                  num_objects=args.objects, fov_x_deg=args.fov, seed=args.seed,
                                  shadows=not args.no_shadows, num_threads=args.threads)
        check_size(config, psutil.virtual_memory().available)  # before allocating anything
        check_output_dir(args.out, args.image_dir, args.overwrite)  # before spending time on rendering
        start = time.perf_counter()
        scene = generate_scene(config)
        out = write_dl3dv_scene(scene, args.out, image_dir=args.image_dir, overwrite=args.overwrite)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {scene.num_views} frames ({args.width}x{args.height}, {args.path} path, "
          f"{scene.layout.num_objects} objects, seed {args.seed}) to {out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
