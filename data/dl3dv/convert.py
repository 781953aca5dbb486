"""Convert DL3DV scene folders into webdataset shards (one scene per sample, frames not re-encoded).

    python -m data.dl3dv.convert --src DL3DV-10K/1K --out shards/ [--shard-size 8] [--image-dir images_4]

--src is searched two levels deep for scenes (<batch>/<hash>). Rerunning into the same --out resumes
by scene: scenes already in a complete shard are kept, every other one (added to --src since, or in
a shard that was interrupted) goes into new shards; none is lost or stored twice. Distortion
coefficients are stored beside the untouched frames and removed when the frames are decoded for
training.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from ..errors import SceneError
from ..open_scene import find_scenes
from .scene import IMAGE_DIRS, read_dl3dv
from .shards import write_shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.dl3dv.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder holding DL3DV scenes (raw <hash>/ or benchmark layout)")
    parser.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar files")
    parser.add_argument("--shard-size", type=int, default=8,
                        help="scenes per shard (default 8, about 2 GB at images_4)")
    parser.add_argument("--image-dir", default="images_4", choices=IMAGE_DIRS, help="image folder to store")
    args = parser.parse_args(argv)
    if args.shard_size < 1:
        print(f"error: --shard-size must be at least 1, got {args.shard_size}", file=sys.stderr)
        return 2
    if not Path(args.src).is_dir():
        print(f"error: --src {args.src} is not a folder", file=sys.stderr)
        return 2
    scenes = find_scenes(args.src)
    if not scenes:
        print(f"error: no DL3DV scenes (transforms.json + {'/'.join(IMAGE_DIRS)}) under {args.src}", file=sys.stderr)
        return 2
    print(f"{len(scenes)} scenes -> {args.out} ({args.shard_size} per shard, {args.image_dir})")
    try:
        index = write_shards(scenes, args.out, args.shard_size, open_fn=partial(read_dl3dv, image_dir=args.image_dir),
                             root=args.src)
    except (SceneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {len(index['shards'])} shards, {index['num_samples']} scenes, {len(index['failed'])} left out, "
          f"{index['resumed_shards']} shards kept from an earlier run")
    for failure in index["failed"]:
        print(f"  left out {failure['scene']}: {failure['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
