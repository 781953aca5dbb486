"""Image sources (a file, encoded bytes in memory, or an array) and their decoding.

Decoding is the only place PIL is called, so every failure becomes a `SceneError` naming the frame.

Pixel formats: 8-bit RGB, greyscale (replicated to RGB), palette and alpha formats (alpha dropped:
DL3DV and COLMAP frames are opaque photographs); 16-bit greyscale is scaled to 8 bits, and PIL
decodes 16-bit colour to its high byte. Other formats (float, 32-bit integer) are refused.

Orientation: a photo whose EXIF orientation tag says it is stored rotated or mirrored is turned
upright (as image viewers show it), and the camera file's intrinsics and poses must describe that
displayed image. COLMAP is the exception: it reads the stored pixels and ignores the tag, so its
scenes decode with `upright=False`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import SceneError

ImageSource = Union[Path, bytes, np.ndarray]  # a file, encoded bytes, or a decoded [H, W, 3] array

_PIL_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL opens 16-bit greyscale PNGs as I;16 (I before 10.x)
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _open(source: Path | bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise SceneError(f"image {name} does not exist; restore it or remove its frame from the camera file") from None
    except _PIL_ERRORS as e:
        raise SceneError(f"image {name} is not a readable image ({e}); re-extract or re-download it") from None


class ImageSize(NamedTuple):
    """An image's size, named so that no caller has to remember an order (tensors are [H, W])."""

    height: int
    width: int


def image_size(source: ImageSource, name: str, upright: bool = True) -> ImageSize:
    """The size from the image header only, without decoding the pixels; upright: as displayed."""
    if isinstance(source, np.ndarray):
        return ImageSize(height=source.shape[0], width=source.shape[1])
    with _open(source, name) as img:
        if upright and _orientation(img, name) in _TRANSPOSED:
            return ImageSize(height=img.width, width=img.height)
        return ImageSize(height=img.height, width=img.width)


def decode_image(source: ImageSource, name: str, upright: bool = True) -> np.ndarray:
    """Decode to RGB: uint8 [H, W, 3] for encoded sources, the array itself for arrays.

    upright: apply the EXIF orientation tag (see the module docstring).
    """
    if isinstance(source, np.ndarray):
        return source
    try:
        with _open(source, name) as img:
            if upright and _orientation(img, name) != 1:
                ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img, name)
    except SceneError:
        raise
    except _PIL_ERRORS as e:
        raise SceneError(f"image {name} is truncated or corrupt ({e}); re-extract or re-download it") from None


def _orientation(img: Image.Image, name: str) -> int:
    """The EXIF orientation tag (1: as stored) from what opening the file parsed, decoding no pixel:
    PIL's PNG reader would decode the whole image to look for EXIF data after the pixels, and the
    image sizes of every frame of a scene are read this way."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1)
    except _PIL_ERRORS as e:
        raise SceneError(f"image {name} has unreadable EXIF data ({e}); re-extract or re-download it") from None


def _to_rgb(img: Image.Image, name: str) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_GREY:
        grey = np.asarray(img).astype(np.int64)  # [H, W]
        if grey.min() >= 0 and grey.max() <= 65535:
            grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
            return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F" or img.mode.startswith("I"):
        raise SceneError(f"image {name} has pixel format {img.mode}, which is not a photograph's; save it as an "
                         "8- or 16-bit PNG or a JPEG")
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    rgb.load()
    return np.asarray(rgb)
