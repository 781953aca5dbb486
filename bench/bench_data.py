"""Data loading throughput per worker: webdataset shards -> training samples (32 inputs + 8 targets).

    python -m bench.bench_data [--samples 6] [--frames 64] [--scenes 4]

Writes temporary shards of 960x540 PNG frames (the DL3DV images_4 size) made from a procedural scene:
a few frames are ray-traced at low resolution, upsampled and given sensor-like noise so the PNGs are
about as large and slow to decode as real photographs. Then, in this process with one torch thread
(as in a DataLoader worker), it times full samples at two settings:
  stage1  256x256 square crops
  stage3  full frame 960x540 -> 960x544 with FoV augmentation
each on distorted frames (undistorted on load, as DL3DV needs) and on pinhole frames, and reports
seconds per sample (CPU and wall), samples/s, MB/s of shard data read and of encoded frames decoded.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data.config import DataConfig
from data.dl3dv.shards import write_shards
from data.procedural import ProceduralConfig, generate_scene
from data.scene import Scene
from data.streaming import ShardDataset
from train.config import stage_config

WIDTH, HEIGHT = 960, 540
LENS = [-0.05, 0.01, 0.0005, -0.0005]  # k1, k2, p1, p2 of the order DL3DV's transforms.json carry


def photo_like_frames(num_frames: int, seed: int = 0) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
    """num_frames PNG-encoded 960x540 frames with their (intrinsics [N, 4], c2w [N, 4, 4]).

    Ray tracing is slow on a CPU, so 8 frames are rendered at 240x135 and reused with fresh noise;
    the camera path comes from a thumbnail-sized render of the full length.
    """
    base = ProceduralConfig(width=WIDTH // 4, height=HEIGHT // 4, seed=seed, shadows=False)
    pictures = generate_scene(base.replace(num_frames=8)).images.permute(0, 3, 1, 2)  # [8, 3, h, w]
    path = generate_scene(base.replace(num_frames=num_frames, width=16, height=9))
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(num_frames):
        big = F.interpolate(pictures[i % 8][None], size=(HEIGHT, WIDTH), mode="bicubic", align_corners=False)
        noisy = big[0].permute(1, 2, 0).numpy() * 255 + rng.normal(0, 4, (HEIGHT, WIDTH, 3))  # photo-like PNG size
        buffer = io.BytesIO()
        Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        frames.append(buffer.getvalue())
    return frames, path.intrinsics * (WIDTH / 16), path.c2w


def write_bench_shards(out: Path, num_scenes: int, num_frames: int) -> float:
    """Shards of `num_scenes` scenes, one per shard, in out/lens (distorted, like DL3DV) and out/pinhole
    (the same bytes without distortion coefficients); returns the mean encoded frame size in MB."""
    frames, intrinsics, c2w = photo_like_frames(num_frames)
    names = [f"images_4/frame_{i + 1:05d}.png" for i in range(num_frames)]
    for kind, lens in (("lens", [LENS] * num_frames), ("pinhole", None)):
        scenes = [Scene.from_frames(f"bench{s}", names, frames, c2w, intrinsics, distortion=lens)
                  for s in range(num_scenes)]
        write_shards(scenes, out / kind, shard_size=1, progress=False)
    return sum(map(len, frames)) / len(frames) / 1e6


def time_setting(shards: Path, config: DataConfig, samples: int, frame_mb: float, scene_mb: float) -> dict:
    ds = ShardDataset(shards, config, seed=0, shuffle_buffer=1)
    stream = iter(ds)
    next(stream)  # warm-up: first shard opened, buffers allocated
    read_mb = decoded_mb = 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(samples):
        sample = next(stream)
        read_mb += scene_mb  # the whole scene streams through the tar reader
        decoded_mb += len(set(sample.input_indices.tolist() + sample.target_indices.tolist())) * frame_mb
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # CPU time is what one worker costs on an idle core; wall time also shows a busy machine's share.
    return {"wall": elapsed / samples, "cpu": cpu / samples, "samples_per_s": samples / cpu,
            "read_mb_s": read_mb / cpu, "decoded_mb_s": decoded_mb / cpu,
            "input_shape": tuple(sample.input_images.shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6, help="timed samples per setting")
    parser.add_argument("--frames", type=int, default=64, help="frames per scene in the shards")
    parser.add_argument("--scenes", type=int, default=4, help="scenes (= shards) to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # what a DataLoader worker gets
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        frame_mb = write_bench_shards(Path(tmp), args.scenes, args.frames)
        scene_mb = frame_mb * args.frames
        print(f"wrote {args.scenes} shards of {args.frames} x {WIDTH}x{HEIGHT} PNG frames "
              f"({frame_mb:.2f} MB per frame) in {time.perf_counter() - t0:.1f} s")
        settings = [
            ("stage1 256x256", "lens", stage_config("stage1").data),
            ("stage3 960x544 + FoV", "lens", stage_config("stage3").data),
            ("stage1 256x256", "pinhole", stage_config("stage1").data),
            ("stage3 960x544 + FoV", "pinhole", stage_config("stage3").data),
        ]
        print(f"{'setting':22s} {'frames':8s} {'CPU s/sample':>12s} {'wall s/sample':>13s} {'samples/s':>9s} "
              f"{'read MB/s':>9s} {'decoded MB/s':>12s}  inputs")
        for name, kind, config in settings:
            r = time_setting(Path(tmp) / kind, config, args.samples, frame_mb, scene_mb)
            print(f"{name:22s} {kind:8s} {r['cpu']:12.3f} {r['wall']:13.3f} {r['samples_per_s']:9.2f} "
                  f"{r['read_mb_s']:9.1f} {r['decoded_mb_s']:12.1f}  {list(r['input_shape'])}")
    print(f"per worker: 1 torch thread, 32 inputs + 8 targets per sample; rates per CPU second; lens = distorted "
          f"frames undistorted on load (DL3DV), pinhole = none; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores. Reproduce with:")
    print("  python -m bench.bench_data " + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
