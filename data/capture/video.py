"""Decoding a video with imageio-ffmpeg (the ffmpeg binary it ships): any container ffmpeg reads.

ffmpeg applies the rotation a phone stores in the file, so frames come out upright, and scales them
(Lanczos) to the size asked for. Every pass decodes the whole stream in order; frames are numbered
from 0 in decoding order, the same in every pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import SceneError

# ffmpeg options for every pass: keep each decoded frame once (no duplication or dropping to a
# constant rate), scale with an antialiasing filter
_PASSTHROUGH = ["-fps_mode", "passthrough"]


class Video:
    def __init__(self, path: Path):
        import imageio_ffmpeg

        self.path = Path(path)
        self._ffmpeg = imageio_ffmpeg
        meta = self._open("rgb24", None)
        self.width, self.height = meta["size"]  # upright, as decoded
        rate, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
        self.expected_frames = round(rate * duration) or None  # for progress bars only; often a little off

    def _open(self, pix_fmt: str, size: tuple[int, int] | None, bits: int | None = None):
        """The running frame generator, its metadata already read."""
        params = _PASSTHROUGH + (["-vf", f"scale={size[0]}:{size[1]}:flags=lanczos"] if size else [])
        logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)  # it warns whenever we scale
        try:
            frames = self._ffmpeg.read_frames(str(self.path), pix_fmt=pix_fmt, output_params=params,
                                              bits_per_pixel=bits)
            meta = next(frames)
        except (OSError, RuntimeError, IndexError, ValueError, StopIteration) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SceneError(f"{self.path} is not a video ffmpeg can decode ({first}); pass a video file (mp4, "
                             "mov, mkv, ...) or a folder of photos") from None
        if size is None:
            frames.close()
            return meta
        return frames

    def frames(self, size: tuple[int, int], grey: bool = False) -> Iterator[np.ndarray]:
        """Every frame in order, scaled to size (width, height): uint8 [H, W, 3], or [H, W] when grey."""
        w, h = size
        stream = self._open("gray" if grey else "rgb24", size, 8 if grey else 24)
        shape = (h, w) if grey else (h, w, 3)
        try:
            for data in stream:
                yield np.frombuffer(data, np.uint8).reshape(shape)
        except (OSError, RuntimeError) as e:
            raise SceneError(f"decoding {self.path} failed part way ({e}); the file may be truncated") from None
        finally:
            stream.close()
