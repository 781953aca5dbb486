"""Image sources (a file, encoded bytes in memory, or an array) and their decoding.

Decoding is the only place PIL is called, so every failure becomes a `SceneError` naming the frame.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import SceneError

ImageSource = Union[Path, bytes, np.ndarray]  # a file, encoded bytes, or a decoded [H, W, 3] array

_PIL_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def _open(source: Path | bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise SceneError(f"image {name} does not exist; restore it or remove its frame from the camera file") from None
    except _PIL_ERRORS as e:
        raise SceneError(f"image {name} is not a readable image ({e}); re-extract or re-download it") from None


def image_size(source: ImageSource, name: str) -> tuple[int, int]:
    """(width, height) from the image header only, without decoding the pixels."""
    if isinstance(source, np.ndarray):
        return source.shape[1], source.shape[0]
    with _open(source, name) as img:
        return img.size


def decode_image(source: ImageSource, name: str) -> np.ndarray:
    """Decode to RGB: uint8 [H, W, 3] for encoded sources, the array itself for arrays.

    Alpha is dropped (DL3DV and COLMAP frames are opaque photographs); grey is replicated to RGB.
    """
    if isinstance(source, np.ndarray):
        return source
    try:
        with _open(source, name) as img:
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            rgb.load()
            return np.asarray(rgb)
    except SceneError:
        raise
    except _PIL_ERRORS as e:
        raise SceneError(f"image {name} is truncated or corrupt ({e}); re-extract or re-download it") from None

