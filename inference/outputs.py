"""Writing results: 8-bit PNG renders, JSON files and the fly-through video.

Metrics are computed on the images exactly as saved (8-bit), so anyone can recompute them from
the files in `renders/` and get the numbers in `metrics.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor


def quantize(images: Tensor) -> Tensor:
    """Round float images in [0, 1] to the 8-bit grid they are saved on, back as float."""
    return (images.clamp(0, 1) * 255).round() / 255


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # [H, W, 3]


def save_png(image: Tensor, path: Path) -> None:
    iio.imwrite(path, to_uint8(image))


def write_json(data, path: Path) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def write_video(frames: list[Tensor], path: Path, fps: int = 24) -> None:
    """Encode frames [H, W, 3] (H and W even, as H.264 needs) to an mp4 with imageio's ffmpeg."""
    import imageio.v2 as iio2

    with iio2.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(to_uint8(frame))
