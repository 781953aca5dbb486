"""Camera poses from a video with pycolmap: SfM wall time, pose error, and SfM's share of the whole command.

    python -m bench.bench_sfm [--frames 60 120] [--sizes 480x270 960x540] [--path walk] [--seed 7]

For each size, a procedural walk-through of max(--frames) frames is rendered with its true cameras,
and each frame count takes frames evenly from it (60 of 120: every other frame, the same path at half
the frame rate). The frames are encoded as an H.264 .mp4 and fed to `python infer.py --views clip.mp4
--eval` with the shipped demo checkpoint, as a user would. Pose error: recovered camera centres are
aligned to the true ones by a similarity (Umeyama), orientations by the rotation that best aligns
them; centre error is relative to the largest distance between true centres.
"SfM" is features + matching + mapping (frame decoding is listed apart); "whole" is the command's
wall time, including decoding, the forward pass, renders and metrics. Mapping runs on one thread for
repeatable poses; "mapping, all threads" maps the same matches again on every core, for its cost.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inference import infer
from data.capture import CaptureConfig
from data.capture.colmap_call import run_colmap
from data.capture.sfm import map_frames
from data.colmap import read_colmap
from data.procedural import ProceduralConfig, generate_scene

SFM_STEPS = ("features", "matching", "mapping")


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising sum |s R src_i + t - dst_i|^2; src, dst [N, 3]."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, d, vt = np.linalg.svd((dst - mu_d).T @ (src - mu_s) / len(src))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / (src - mu_s).var(0).sum()
    return scale, rot, mu_d - scale * rot @ mu_s


def pose_errors(c2w: np.ndarray, true_c2w: np.ndarray) -> tuple[float, float]:
    """(median rotation error in degrees, median centre error as a share of the true centres' extent).

    Centres are aligned by Umeyama. Orientations are compared after the one rotation that best aligns
    them (the chordal mean of true @ recovered^T): a walk at eye height has nearly coplanar centres,
    which leave the tilt of the centre alignment undetermined by a few degrees."""
    s, r, t = umeyama(c2w[:, :3, 3], true_c2w[:, :3, 3])
    centres = s * c2w[:, :3, 3] @ r.T + t
    extent = np.linalg.norm(true_c2w[:, None, :3, 3] - true_c2w[None, :, :3, 3], axis=-1).max()
    u, _, vt = np.linalg.svd((true_c2w[:, :3, :3] @ np.swapaxes(c2w[:, :3, :3], 1, 2)).sum(0))
    align = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    rel = np.swapaxes(true_c2w[:, :3, :3], 1, 2) @ align @ c2w[:, :3, :3]
    angles = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return float(np.median(angles)), float(np.median(np.linalg.norm(centres - true_c2w[:, :3, 3], axis=-1)) / extent)


def encode(frames: np.ndarray, path: Path, fps: int = 30, crf: int = 18) -> Path:
    """frames [T, H, W, 3] uint8 -> an H.264 .mp4 at constant quality `crf` (lower: closer to lossless)."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264", macro_block_size=1,
                                         output_params=["-crf", str(crf)], pix_fmt_out="yuv420p")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def run_one(frames: np.ndarray, true_c2w: np.ndarray, work: Path) -> dict:
    clip = encode(frames, work / "clip.mp4")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = infer.main(["--views", str(clip), "--out", str(work / "out"), "--eval", "--no-lpips",
                           "--max-frames", str(len(frames))])
    whole = time.perf_counter() - start
    if code != 0:
        return {"failed": True, "whole": whole}
    report = json.loads((work / "out" / "capture.json").read_text())
    scene = read_colmap(work / "out")
    index = [int(Path(name).stem.split("_")[1]) - 1 for name in scene.names]
    rotation, centre = pose_errors(scene.c2w.numpy(), true_c2w[index])
    seconds = report["seconds"]
    sfm = sum(seconds[k] for k in SFM_STEPS)
    psnr = json.loads((work / "out" / "metrics.json").read_text())["mean"]["psnr"]
    return {"registered": len(index), "rotation": rotation, "centre": centre, "decode": seconds["frames"],
            **{k: seconds[k] for k in SFM_STEPS}, "sfm": sfm, "whole": whole, "loops": report["loop_pairs"],
            "psnr": psnr, "threaded": threaded_mapping(work / "out", len(frames), work / "threaded")}


def threaded_mapping(out: Path, count: int, scratch: Path) -> float:
    """Seconds to map the capture in `out` again, the same way but on all threads."""
    config = CaptureConfig()
    scratch.mkdir()
    start = time.perf_counter()
    run_colmap(lambda bar: map_frames(out / "database.db", out / "images", scratch, config, bar, num_threads=-1),
               scratch / "colmap.log", "mapping, all threads", count, "frame", config.seed)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 120])
    parser.add_argument("--sizes", nargs="+", default=["480x270", "960x540"])
    parser.add_argument("--path", default="walk", choices=["walk", "forward", "orbit"])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    print("command: python -m bench.bench_sfm " + " ".join(sys.argv[1:]))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; on a machine shared with other "
          "work, wall times vary from run to run: compare rows of one run")
    print("| size | frames | registered | rotation err (deg) | centre err (% extent) | decode s | features s | "
          "matching s | mapping s | SfM s | whole s | SfM share | loop pairs | held-out PSNR | mapping, all threads s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        room = generate_scene(ProceduralConfig(num_frames=max(args.frames), width=width, height=height,
                                               seed=args.seed, path=args.path))
        pixels = np.rint(room.images.clamp(0, 1).numpy() * 255).astype(np.uint8)  # [N, H, W, 3]
        c2w = room.c2w.double().numpy()
        for count in args.frames:
            pick = np.linspace(0, len(pixels) - 1, count).round().astype(int)
            with tempfile.TemporaryDirectory() as work:
                r = run_one(pixels[pick], c2w[pick], Path(work))
            if r.get("failed"):
                print(f"| {size} | {count} | failed (see the error above) | | | | | | | | {r['whole']:.1f} | | | | |")
                continue
            print(f"| {size} | {count} | {r['registered']} | {r['rotation']:.3f} | {100 * r['centre']:.2f} | "
                  f"{r['decode']:.1f} | {r['features']:.1f} | {r['matching']:.1f} | {r['mapping']:.1f} | "
                  f"{r['sfm']:.1f} | {r['whole']:.1f} | {100 * r['sfm'] / r['whole']:.0f}% | {r['loops']} | "
                  f"{r['psnr']:.2f} | {r['threaded']:.1f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
