"""python -m view PATH: show a reconstruction in the browser.

    python -m view results/scene                      # an infer.py output folder (or a refinement's)
    python -m view scene.ply --port 8081 --max-gaussians 2000000

PATH is a 3DGS PLY (graphdeco layout) or a folder holding one; cameras.json next to it adds the input
and held-out cameras (frustums with their images; pick one in the panel or click it to look through it).
The splats are drawn by the browser (WebGL), so the serving machine needs no GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .server import DEFAULT_MAX_GAUSSIANS, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m view", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("path", type=Path, help="a .ply file, or an infer.py / refinement output folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network interface; "
                   "default: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-gaussians", type=int, default=DEFAULT_MAX_GAUSSIANS,
                   help="send at most this many, the most opaque, so the page stays responsive "
                   f"(default {DEFAULT_MAX_GAUSSIANS:,})")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        serve(args.path, args.host, args.port, args.max_gaussians)
    except (ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
