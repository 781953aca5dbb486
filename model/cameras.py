"""Pinhole cameras in OpenCV axes (x right, y down, z forward).

One `Cameras` holds any number of cameras sharing one image size. Everything the project
derives from a camera (world-to-camera matrices for the renderer, 3x3 pixel intrinsics,
per-pixel rays, projections) is computed here so the conventions live in one place:
intrinsics are in pixels of the image actually used and pixel (i, j) has its centre at
(x, y) = (j + 0.5, i + 0.5). The network's Plücker coordinates are made from these rays
(model/tokenizer.py `pixel_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Flip the camera's y and z axes: OpenGL/Blender (y up, z back) <-> OpenCV (y down, z forward).

    The flip is its own inverse, so the same function converts both ways.
    """
    out = c2w.clone()  # [..., 4, 4]
    out[..., :3, 1:3] *= -1
    return out


def invert_rigid(m: Tensor) -> Tensor:
    """Inverse of rigid (or similarity-free) 4x4 transforms [..., 4, 4] without a general inverse."""
    rot = m[..., :3, :3]
    t = m[..., :3, 3:]
    rot_t = rot.transpose(-1, -2)
    out = torch.zeros_like(m)
    out[..., :3, :3] = rot_t
    out[..., :3, 3:] = -rot_t @ t
    out[..., 3, 3] = 1
    return out


@dataclass
class Cameras:
    intrinsics: Tensor  # [..., 4] fx, fy, cx, cy in pixels
    c2w: Tensor  # [..., 4, 4] camera-to-world, OpenCV axes
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.intrinsics.shape[-1] != 4:
            raise ValueError(f"intrinsics must be [..., 4] (fx, fy, cx, cy), got {tuple(self.intrinsics.shape)}")
        if self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"c2w must be [..., 4, 4], got {tuple(self.c2w.shape)}")
        if self.intrinsics.shape[:-1] != self.c2w.shape[:-2]:
            raise ValueError(
                f"intrinsics {tuple(self.intrinsics.shape)} and c2w {tuple(self.c2w.shape)} "
                "must share their leading (camera) dimensions"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def shape(self) -> torch.Size:
        return self.intrinsics.shape[:-1]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def __getitem__(self, index) -> Cameras:
        return Cameras(self.intrinsics[index], self.c2w[index], self.width, self.height)

    def to(self, *args, **kwargs) -> Cameras:
        return Cameras(self.intrinsics.to(*args, **kwargs), self.c2w.to(*args, **kwargs), self.width, self.height)

    def reshape(self, *shape: int) -> Cameras:
        return Cameras(self.intrinsics.reshape(*shape, 4), self.c2w.reshape(*shape, 4, 4), self.width, self.height)

    @staticmethod
    def cat(cameras: list[Cameras], dim: int = 0) -> Cameras:
        """Concatenate along leading (camera) dimension `dim` >= 0."""
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate cameras with different image sizes {sorted(sizes)}")
        return Cameras(
            torch.cat([c.intrinsics for c in cameras], dim),
            torch.cat([c.c2w for c in cameras], dim),
            cameras[0].width,
            cameras[0].height,
        )

    @property
    def centers(self) -> Tensor:
        return self.c2w[..., :3, 3]  # [..., 3]

    @property
    def viewmats(self) -> Tensor:
        """World-to-camera matrices, the renderer's `viewmats`."""
        return invert_rigid(self.c2w)  # [..., 4, 4]

    @property
    def Ks(self) -> Tensor:
        fx, fy, cx, cy = self.intrinsics.unbind(-1)
        zero, one = torch.zeros_like(fx), torch.ones_like(fx)
        rows = [
            torch.stack([fx, zero, cx], -1),
            torch.stack([zero, fy, cy], -1),
            torch.stack([zero, zero, one], -1),
        ]
        return torch.stack(rows, -2)  # [..., 3, 3]

    def pixel_directions(self) -> Tensor:
        """Unit ray directions in camera space through every pixel centre."""
        dtype, device = self.intrinsics.dtype, self.intrinsics.device
        ys = torch.arange(self.height, dtype=dtype, device=device) + 0.5
        xs = torch.arange(self.width, dtype=dtype, device=device) + 0.5
        fx, fy, cx, cy = (t[..., None, None] for t in self.intrinsics.unbind(-1))  # [..., 1, 1]
        x = (xs[None, :] - cx) / fx  # [..., 1, W] -> broadcast below
        y = (ys[:, None] - cy) / fy  # [..., H, 1]
        x, y = torch.broadcast_tensors(x, y)  # [..., H, W]
        d = torch.stack([x, y, torch.ones_like(x)], -1)  # [..., H, W, 3]
        return d / d.norm(dim=-1, keepdim=True)

    def rays(self) -> tuple[Tensor, Tensor]:
        """World-space ray origins and unit directions through every pixel centre.

        Returns (origins [..., H, W, 3], directions [..., H, W, 3]).
        """
        d_cam = self.pixel_directions()  # [..., H, W, 3]
        rot = self.c2w[..., None, None, :3, :3]  # [..., 1, 1, 3, 3]
        d_world = (rot @ d_cam[..., None])[..., 0]
        origins = self.centers[..., None, None, :].expand_as(d_world)
        return origins, d_world

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points [..., P, 3] into these cameras [...].

        Returns (pixel xy [..., P, 2] in the +0.5 convention, camera-space z [..., P]).
        """
        w2c = self.viewmats[..., None, :, :]  # [..., 1, 4, 4]
        p_cam = (w2c[..., :3, :3] @ points[..., None])[..., 0] + w2c[..., :3, 3]  # [..., P, 3]
        z = p_cam[..., 2]
        fx, fy, cx, cy = (t[..., None] for t in self.intrinsics.unbind(-1))
        xy = torch.stack([fx * p_cam[..., 0] / z + cx, fy * p_cam[..., 1] / z + cy], -1)
        return xy, z
