"""What the viewer and the exports cost on the serving machine, per million Gaussians.

    python -m bench.bench_view [--gaussians 1000000] [--cameras 32] [--sh-degree 3]

Times, for random Gaussians of the given SH degree: the viewer's preparation (cap by opacity, colours
baked from the SH toward `--cameras` camera centres, covariances; what `python -m view` does before
serving), the bytes viser sends to the browser, and each export format (gsplat's encoder) with its size
next to the graphdeco PLY's. The browser's own frame rate depends on its GPU and is not measured here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from model.gaussians import Gaussians
from model.ply import ply_field_names
from view.export import FORMATS, encode
from view.reconstruction import cap_by_opacity
from view.splats import splat_arrays

VISER_BYTES_PER_GAUSSIAN = 32  # centre 3 x f32, reserved 4 bytes, covariance 6 x f16, RGBA 4 x u8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--sh-degree", type=int, default=3)
    args = parser.parse_args()
    print("command: python -m bench.bench_view " + " ".join(sys.argv[1:]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")

    g = torch.Generator().manual_seed(0)
    n = args.gaussians
    gaussians = Gaussians(means=torch.randn(n, 3, generator=g), log_scales=torch.rand(n, 3, generator=g) * 3 - 7,
                          quats=torch.randn(n, 4, generator=g), opacity_logits=torch.randn(n, generator=g) * 2,
                          sh=torch.randn(n, (args.sh_degree + 1) ** 2, 3, generator=g) * 0.3)
    centres = torch.randn(args.cameras, 3, generator=g) * 3
    ply_bytes = n * 4 * len(ply_field_names(args.sh_degree))

    start = time.perf_counter()
    kept, _ = cap_by_opacity(gaussians, n // 2)
    capped = time.perf_counter() - start
    start = time.perf_counter()
    splat_arrays(gaussians, centres)
    prepared = time.perf_counter() - start
    print(f"{n:,} Gaussians, SH degree {args.sh_degree}, {args.cameras} cameras")
    print(f"viewer: cap to half by opacity {capped:.2f} s; colours + covariances {prepared:.2f} s; "
          f"sent to the browser {n * VISER_BYTES_PER_GAUSSIAN / 1e6:.0f} MB")
    for name in FORMATS:
        start = time.perf_counter()
        size = len(encode(gaussians, name))
        print(f"export {name}: {time.perf_counter() - start:.2f} s, {size / 1e6:.0f} MB "
              f"({ply_bytes / size:.1f}x smaller than the PLY's {ply_bytes / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
