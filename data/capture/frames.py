"""Frames for SfM and the network: from a video or a photo folder into images/, at most
`max_frames`, spread over the sequence and the sharpest of their neighbourhood, at most
`frame_size` pixels on the longest side (never enlarged), upright, as 8-bit PNG (lossless)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import SceneError
from .config import CaptureConfig
from .photos import Photos
from .selection import pick_frames, sharpness
from .video import Video


@dataclass
class Frames:
    names: list[str]  # written files in images/, in sequence order
    origins: list[str]  # where each came from: "frame 12" of the video, or the photo's file name
    sharpness: list[float | None]  # of each kept frame; None when every frame was kept without scoring
    total: int  # frames (or photos) in the source
    width: int
    height: int
    seconds: dict[str, float] = field(default_factory=dict)


def frame_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most `longest`; never enlarged."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def extract_frames(source: Video | Photos, images: Path, config: CaptureConfig) -> Frames:
    start = time.perf_counter()
    size = frame_size(source.width, source.height, config.frame_size)
    if isinstance(source, Video):
        scores = np.array([sharpness(g) for g in tqdm(source.frames(size, grey=True), desc="decoding video",
                                                       total=source.expected_frames, unit="frame", leave=False)])
        if len(scores) < 2:
            raise SceneError(f"{source.path} has {len(scores)} decodable frame(s); SfM needs a video with many "
                             "frames of a moving camera")
        keep = pick_frames(scores, config.max_frames)
        names = [f"frame_{i + 1:06d}.png" for i in keep]
        origins = [f"frame {i}" for i in keep]
        wanted = dict(zip(keep, names))
        with tqdm(total=len(keep), desc="writing frames", unit="frame", leave=False) as bar:
            for i, frame in enumerate(source.frames(size)):
                if i in wanted:
                    Image.fromarray(frame).save(images / wanted[i])
                    bar.update(1)
                if i >= keep[-1]:
                    break
        if bar.n < len(keep):
            raise SceneError(f"{source.path} gave fewer frames on a second decoding pass than on the first "
                             f"({len(scores)}); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
        kept_scores = [float(scores[i]) for i in keep]
    else:
        scores = None
        if len(source) > config.max_frames:
            scores = np.array([sharpness(g) for g in tqdm(source.frames(size, grey=True), desc="scoring photos",
                                                           total=len(source), unit="photo", leave=False)])
        keep = pick_frames(scores, config.max_frames) if scores is not None else list(range(len(source)))
        names = [source.paths[i].stem + ".png" for i in keep]
        origins = [source.paths[i].name for i in keep]
        for i, name in zip(tqdm(keep, desc="writing frames", unit="photo", leave=False), names):
            Image.fromarray(source.frame(i, size)).save(images / name)
        kept_scores = [float(scores[i]) for i in keep] if scores is not None else [None] * len(keep)
    total = len(scores) if scores is not None else len(source)
    return Frames(names, origins, kept_scores, total, *size, seconds={"frames": time.perf_counter() - start})
