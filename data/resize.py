"""Cropping and resizing views with intrinsics updated exactly, and the crop box each recipe keeps.

Pixel centres are at +0.5, so a pixel coordinate x is a position on the continuous image plane whose
edges are 0 and W. Resizing W -> W' maps x -> x * W'/W (the `align_corners=False` convention of
F.interpolate), hence fx, cx scale by W'/W and fy, cy by H'/H, each axis on its own. Cropping at
(top, left) subtracts the offset from cx, cy. Image functions take and return
(images [V, H, W, 3], Cameras [V]); images may be uint8 (resized on the fast uint8 path) or float.

Every sample is one crop box of the (undistorted) frame followed by one resize, see `view_box`:
- FoV zoom by 1/r: the centred (r*H) x (r*W) region, so the zoom is taken from the full-resolution
  frame (the official code upsamples the already-resized image instead).
- "square" (stages 1, 2): then the centred square of side min(h, w), resized to size x size; the
  same as resizing the short side then centre-cropping. Portrait frames lose top and bottom.
- "full" (stage 3): the whole box resized straight to `full_frame_size` (960x540 -> 960x544, as
  the official code does: both sides rounded to multiples of 16, aspect changed by 0.7%). Portrait
  frames become 544x960 (W x H); the network is size-agnostic, but they cannot share a batch with
  landscape frames (collate explains this).
Inference and evaluation never crop: the whole frame is resized to `inference_size`, the size the
checkpoint's training recipe gives the capture, unless that would stretch it by more than
ASPECT_TOLERANCE (a square-trained model and a 16:9 video): then about as many pixels at the
capture's own aspect.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from model.cameras import Cameras

from .config import RESAMPLE_FILTERS, ResolutionConfig

# Relative aspect change beyond which inference stops stretching a capture to the training size.
# 960x540 -> 960x544, the official rounding, changes it by 0.74%.
ASPECT_TOLERANCE = 0.02


def crop_cameras(cameras: Cameras, top: int, left: int, height: int, width: int) -> Cameras:
    shift = cameras.intrinsics.new_tensor([0.0, 0.0, left, top])
    return Cameras(cameras.intrinsics - shift, cameras.c2w, width, height)


def resize_cameras(cameras: Cameras, height: int, width: int) -> Cameras:
    sx, sy = width / cameras.width, height / cameras.height
    return Cameras(cameras.intrinsics * cameras.intrinsics.new_tensor([sx, sy, sx, sy]), cameras.c2w, width, height)


def crop(images: Tensor, cameras: Cameras, top: int, left: int, height: int, width: int) -> tuple[Tensor, Cameras]:
    """Keep rows [top, top + height) and columns [left, left + width); the principal point shifts."""
    h, w = images.shape[-3:-1]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"crop {width}x{height} at ({left}, {top}) does not fit in a {w}x{h} image")
    return images[:, top:top + height, left:left + width], crop_cameras(cameras, top, left, height, width)


def resize(images: Tensor, cameras: Cameras, height: int, width: int,
           resample: str = "antialiased") -> tuple[Tensor, Cameras]:
    """Resize to height x width with a filter of RESAMPLE_FILTERS; fx, cx scale by W'/W and fy, cy by H'/H.

    "bilinear" on uint8 frames rounds like OpenCV's INTER_LINEAR: at most 1/255 apart from it.
    """
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"resample must be one of {RESAMPLE_FILTERS}, got {resample!r}")
    if images.shape[-3:-1] == (height, width):
        return images, cameras
    # [V, H, W, 3] permuted to [V, 3, H, W] is channels-last in memory: the fast path, and no copy back.
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
                      antialias=resample == "antialiased", align_corners=False)
    out = x.permute(0, 2, 3, 1)  # [V, H', W', 3]
    if out.is_floating_point():
        out = out.clamp(0.0, 1.0)
    return out, resize_cameras(cameras, height, width)


def center_box(height: int, width: int, box_height: int, box_width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centred box."""
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


def view_box(height: int, width: int, fov_ratio: float = 1.0, square: bool = False) -> tuple[int, int, int, int]:
    """The crop box (top, left, height, width) a sample keeps of a height x width frame.

    fov_ratio r in (0, 1] keeps the centred r-sized region (a 1/r zoom); square then keeps the
    centred square of that region.
    """
    if not 0.0 < fov_ratio <= 1.0:
        raise ValueError(f"FoV zoom ratio must be in (0, 1], got {fov_ratio}")
    top, left, h, w = center_box(height, width, max(1, round(height * fov_ratio)), max(1, round(width * fov_ratio)))
    if square:
        inner_top, inner_left, h, w = center_box(h, w, min(h, w), min(h, w))
        top, left = top + inner_top, left + inner_left
    return top, left, h, w


def full_frame_size(height: int, width: int, short_side: int = 540, multiple: int = 16) -> tuple[int, int]:
    """Target (H', W') keeping the aspect: the short side -> short_side, both rounded to `multiple`.

    Mirrors the official rule (resize_h = 540, resize_w = int(540 / H * W), each rounded to a
    multiple of 16), applied to the short side so portrait frames get the transposed size.
    """
    short, long = min(height, width), max(height, width)
    new_short = round(short_side / multiple) * multiple
    new_long = round(int(short_side / short * long) / multiple) * multiple
    return (new_short, new_long) if height <= width else (new_long, new_short)


def aspect_change(size: tuple[int, int], height: int, width: int) -> float:
    """Relative change of aspect ratio from height x width frames to `size` (H, W)."""
    return abs((size[1] / size[0]) / (width / height) - 1.0)


def size_for_aspect(height: int, width: int, pixels: int, multiple: int = 16) -> tuple[int, int]:
    """(H', W'), multiples of `multiple`, of about `pixels` pixels and as close as they come to the
    aspect of height x width frames."""
    aspect = width / height
    candidates = []
    for h in (math.floor, math.ceil):
        side = max(multiple, h((pixels / aspect) ** 0.5 / multiple) * multiple)
        candidates.append((side, max(multiple, round(side * aspect / multiple) * multiple)))
    for w in (math.floor, math.ceil):
        side = max(multiple, w((pixels * aspect) ** 0.5 / multiple) * multiple)
        candidates.append((max(multiple, round(side / aspect / multiple) * multiple), side))
    return min(candidates, key=lambda s: (round(aspect_change(s, height, width), 9), abs(s[0] * s[1] - pixels)))


def inference_size(height: int, width: int, resolution: ResolutionConfig) -> tuple[tuple[int, int], bool]:
    """((H', W'), followed): the whole-frame size inference gives height x width frames.

    The training recipe's size ("square": size x size; "full": `full_frame_size`), unless that changes
    the aspect by more than ASPECT_TOLERANCE: then `size_for_aspect` with as many pixels, and
    followed=True.
    """
    r = resolution
    trained = (r.size, r.size) if r.mode == "square" else full_frame_size(height, width, r.size, r.multiple)
    if aspect_change(trained, height, width) <= ASPECT_TOLERANCE:
        return trained, False
    return size_for_aspect(height, width, trained[0] * trained[1], r.multiple), True


def to_float(images: Tensor) -> Tensor:
    """uint8 or float [V, H, W, 3] -> contiguous float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)  # .float() already copies into a new contiguous buffer
    return images.float().contiguous()
