"""Typed containers for one scene's views (`Sample`) and a batch of them (`Batch`), and `collate`.

Poses in both are normalised (see data/normalize.py); `normalization` is the world -> normalised
similarity, so outputs can be mapped back to the scene's own world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.cameras import Cameras


@dataclass
class Sample:
    scene_id: str
    input_images: Tensor  # [V, H, W, 3] float in [0, 1]
    input_cameras: Cameras  # [V]
    target_images: Tensor  # [T, H, W, 3]
    target_cameras: Cameras  # [T]
    normalization: Tensor  # [4, 4] float64 world -> normalised similarity
    input_indices: Tensor  # [V] frame indices in the scene
    target_indices: Tensor  # [T]


@dataclass
class Batch:
    scene_ids: list[str]  # [B]
    input_images: Tensor  # [B, V, H, W, 3]
    input_cameras: Cameras  # [B, V]
    target_images: Tensor  # [B, T, H, W, 3]
    target_cameras: Cameras  # [B, T]
    normalization: Tensor  # [B, 4, 4] float64 (kept in float64 by `to`)
    input_indices: Tensor  # [B, V]
    target_indices: Tensor  # [B, T]

    def __len__(self) -> int:
        return len(self.scene_ids)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move to `device`; images and cameras optionally cast to `dtype` (e.g. bfloat16)."""
        def cams(c: Cameras) -> Cameras:
            return c.to(device=device, dtype=dtype)

        return Batch(self.scene_ids, self.input_images.to(device=device, dtype=dtype), cams(self.input_cameras),
                     self.target_images.to(device=device, dtype=dtype), cams(self.target_cameras),
                     self.normalization.to(device), self.input_indices.to(device), self.target_indices.to(device))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        def pin(c: Cameras) -> Cameras:
            return Cameras(c.intrinsics.pin_memory(), c.c2w.pin_memory(), c.width, c.height)

        return Batch(self.scene_ids, self.input_images.pin_memory(), pin(self.input_cameras),
                     self.target_images.pin_memory(), pin(self.target_cameras), self.normalization.pin_memory(),
                     self.input_indices.pin_memory(), self.target_indices.pin_memory())


def collate(samples: list[Sample]) -> Batch:
    """Stack samples of equal image size and view counts (pass as DataLoader(collate_fn=collate))."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    shapes = {(tuple(s.input_images.shape), tuple(s.target_images.shape)) for s in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"cannot batch samples of different shapes {sorted(shapes)}: full-frame samples of portrait and landscape "
            "videos differ in size and evaluation target counts vary per scene; use batch size 1 per device for those, "
            "or resolution.portrait='error' to leave portrait videos out"
        )
    return Batch(
        scene_ids=[s.scene_id for s in samples],
        input_images=torch.stack([s.input_images for s in samples]),
        input_cameras=_stack_cameras([s.input_cameras for s in samples]),
        target_images=torch.stack([s.target_images for s in samples]),
        target_cameras=_stack_cameras([s.target_cameras for s in samples]),
        normalization=torch.stack([s.normalization for s in samples]),
        input_indices=torch.stack([s.input_indices for s in samples]),
        target_indices=torch.stack([s.target_indices for s in samples]),
    )


def _stack_cameras(cameras: list[Cameras]) -> Cameras:
    """[V] cameras of B samples -> Cameras [B, V] (image sizes already checked equal)."""
    return Cameras(torch.stack([c.intrinsics for c in cameras]), torch.stack([c.c2w for c in cameras]),
                   cameras[0].width, cameras[0].height)
