"""`Scene`: the cameras of one captured video plus lazily decoded frames.

Every reader (nerfstudio, DL3DV, the official processed format, COLMAP, shards, procedural scenes)
produces a Scene through `Scene.from_frames`, which is where all checks live: readable images of
one size, finite rigid poses, intrinsics rescaled to the images actually read, and lens distortion
either removed (resampling on load) or refused. After that the rest of the data layer can trust it.

Cameras are OpenCV (x right, y down, z forward), intrinsics in pixels of the returned images with
pixel centres at +0.5. Poses and intrinsics are kept in float64 (world coordinates can be large)
and handed out as float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.cameras import Cameras

from .distortion import grid_window, remap, undistorted_intrinsics, undistortion_grid
from .errors import SceneError
from .images import ImageSize, ImageSource, decode_image, image_size
from .resize import crop as crop_views
from .resize import crop_cameras, resize, resize_cameras, to_float

DISTORTION_POLICIES = ("undistort", "error")
_RIGID_TOLERANCE = 1e-3  # on |R^T R - I| and |det R - 1|; COLMAP poses rounded to float32 pass easily
_MAX_GRIDS = 8  # undistortion grids kept per scene (one per lens and output camera)
_ASPECT_TOLERANCE = 0.01  # relative; images_4/images_8 of odd-sized originals differ by < 0.5 px


@dataclass
class Scene:
    scene_id: str
    names: list[str]  # [N] frame names (paths relative to the scene folder), used as ids and in messages
    sources: list[ImageSource]  # [N] where each frame's pixels come from
    intrinsics: Tensor  # [N, 4] float64 fx, fy, cx, cy of the images `load_views` returns
    c2w: Tensor  # [N, 4, 4] float64 camera-to-world, OpenCV axes
    width: int  # of the images `load_views` returns
    height: int
    camera_file: str = ""  # the file the cameras came from, named in error messages
    raw_intrinsics: Tensor | None = None  # [N, 4] of the stored, distorted images; None when not distorted
    distortion: Tensor | None = None  # [N, 4] k1, k2, p1, p2 of the stored images; None when not distorted
    extras: dict = field(default_factory=dict)  # format-specific metadata (e.g. precomputed eval inputs)
    upright: bool = True  # frames turned by their EXIF orientation (data.images); False: as stored (COLMAP)
    _grids: dict = field(default_factory=dict, repr=False)  # undistortion grids per lens and output camera

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_frames(
        cls,
        scene_id: str,
        names: list[str],
        sources: list[ImageSource],
        c2w: Tensor | np.ndarray,
        intrinsics: Tensor | np.ndarray,
        calibration_sizes: Tensor | np.ndarray | None = None,
        distortion: Tensor | np.ndarray | None = None,
        on_distortion: str = "undistort",
        camera_file: str = "",
        extras: dict | None = None,
        size: ImageSize | None = None,
        upright: bool = True,
    ) -> Scene:
        """Check and assemble a scene.

        c2w [N, 4, 4] (or [N, 3, 4]) OpenCV camera-to-world; intrinsics [N, 4] valid for images of
        `calibration_sizes` [N, 2] (width, height), rescaled here to the real decoded size (None: the
        intrinsics already refer to the stored images); distortion [N, 4] k1, k2, p1, p2 or None.
        size: the image size known to be shared by all frames (e.g. checked when a shard was written);
        skips reading every image header here, while `load_views` still checks each decoded frame.
        upright: the cameras describe the frames turned by their EXIF orientation, as displayed (False:
        as stored, which is what COLMAP describes).
        """
        where = camera_file or scene_id
        if not names:
            raise SceneError(f"{where} lists no frames; a scene needs at least one posed image")
        if on_distortion not in DISTORTION_POLICIES:
            raise ValueError(f"on_distortion must be one of {DISTORTION_POLICIES}, got {on_distortion!r}")
        c2w = as_c2w(c2w, where)
        check_poses(c2w, names, where)
        height, width = size if size is not None else _common_size(names, sources, where, upright)
        intrinsics = torch.as_tensor(np.asarray(intrinsics, dtype=np.float64))  # [N, 4]
        if intrinsics.shape != (len(names), 4):
            raise SceneError(f"{where}: expected intrinsics for {len(names)} frames, "
                             f"got shape {tuple(intrinsics.shape)}")
        _check_intrinsics(intrinsics, names, where)
        if calibration_sizes is not None:
            intrinsics = _rescale(intrinsics, torch.as_tensor(np.asarray(calibration_sizes, dtype=np.float64)),
                                  width, height, names, where)
        raw, coeffs = None, None
        if distortion is not None:
            coeffs = torch.as_tensor(np.asarray(distortion, dtype=np.float64)).reshape(len(names), 4)
            if not torch.isfinite(coeffs).all():
                raise SceneError(f"{where} has non-finite lens distortion coefficients; fix the camera file")
            if (coeffs.abs() > 0).any():
                if on_distortion == "error":
                    i = int((coeffs.abs() > 0).any(-1).nonzero()[0])
                    raise SceneError(
                        f"{where}: frame {names[i]} has lens distortion (k1, k2, p1, p2 = {coeffs[i].tolist()}) and "
                        "distortion='error' was requested; open it with distortion='undistort' or undistort the "
                        "images first"
                    )
                raw = intrinsics
                intrinsics = _undistorted(raw, coeffs, width, height, where)
            else:
                coeffs = None
        return cls(scene_id, list(names), list(sources), intrinsics, c2w, width, height, camera_file, raw, coeffs,
                   dict(extras or {}), upright)

    @classmethod
    def from_arrays(cls, scene_id: str, images: Tensor, intrinsics: Tensor, c2w: Tensor) -> Scene:
        """A scene held in memory: images [N, H, W, 3] (float in [0, 1] or uint8), intrinsics [N, 4], c2w [N, 4, 4]."""
        arrays = [frame for frame in images.numpy()] if isinstance(images, Tensor) else list(images)
        names = [f"frame_{i + 1:05d}" for i in range(len(arrays))]
        return cls.from_frames(scene_id, names, arrays, c2w, intrinsics, camera_file=f"in-memory scene {scene_id}")

    def load_views(self, indices, crop: tuple[int, int, int, int] | None = None,
                   size: ImageSize | None = None, resample: str = "antialiased") -> tuple[Tensor, Cameras]:
        """Decode frames `indices` [V]: (images [V, H, W, 3] float32 in [0, 1], Cameras [V]).

        crop: (top, left, height, width) box of the (undistorted) frame to keep; size: what to
        resize that box to, with the filter `resample` (data/resize.py). Done here, a distorted frame
        is undistorted, cropped and resized in one resampling, and an undistorted one is cropped and
        resized in uint8 before becoming float.
        """
        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(self):
                raise IndexError(f"frame index {i} out of range for scene {self.scene_id} with {len(self)} frames")
        frames = self._decode(indices)  # [V, H, W, 3] uint8 (float for in-memory scenes)
        box = crop or (0, 0, self.height, self.width)
        height, width = size or box[2:]
        cameras = self.cameras(indices)
        if self.distortion is None:
            frames, cameras = crop_views(frames, cameras, *box)
            frames, cameras = resize(frames, cameras, height, width, resample)
            return to_float(frames), cameras
        target = resize_cameras(crop_cameras(cameras, *box), height, width)
        return self._undistort(frames, indices, target, box), target

    def _decode(self, indices: list[int]) -> Tensor:
        frames = []
        for i in indices:
            array = decode_image(self.sources[i], self.names[i], self.upright)  # [H, W, 3]
            if array.shape[:2] != (self.height, self.width):
                raise SceneError(
                    f"image {self.names[i]} of scene {self.scene_id} is {array.shape[1]}x{array.shape[0]}, not "
                    f"{self.width}x{self.height} like its other frames; resize or remove it"
                )
            frames.append(array)
        if not frames:
            return torch.zeros(0, self.height, self.width, 3, dtype=torch.uint8)
        return torch.from_numpy(np.stack(frames))  # one writable copy (PIL's arrays are read-only)

    def cameras(self, indices=None) -> Cameras:
        """Cameras [V] of frames `indices` (all frames when None) without decoding any image."""
        idx = slice(None) if indices is None else [int(i) for i in indices]
        return Cameras(self.intrinsics[idx].float(), self.c2w[idx].float(), self.width, self.height)

    def subset(self, indices) -> Scene:
        """A scene holding only frames `indices`, in that order (e.g. to drop unselected encoded frames)."""
        idx = [int(i) for i in indices]
        raw = None if self.raw_intrinsics is None else self.raw_intrinsics[idx]
        coeffs = None if self.distortion is None else self.distortion[idx]
        return Scene(self.scene_id, [self.names[i] for i in idx], [self.sources[i] for i in idx],
                     self.intrinsics[idx], self.c2w[idx], self.width, self.height, self.camera_file,
                     raw, coeffs, dict(self.extras), self.upright, self._grids)

    def _undistort(self, frames: Tensor, indices: list[int], target: Cameras, box: tuple[int, int, int, int]) -> Tensor:
        """One bilinear resampling from the distorted frames [V, H, W, 3] to the pinhole `target` views.

        Bilinear weights sum to one and the border is clamped, so values stay in [0, 1].
        """
        raw = Cameras(self.raw_intrinsics[indices].float(), self.c2w[indices].float(), self.width, self.height)
        # Much smaller outputs: shrink the distorted frames first (antialiased) so the resampling does not
        # alias; the lens model works in normalised coordinates, so any resolution will do.
        scale = min(1.0, target.width / box[3], target.height / box[2])
        if scale < 0.75:
            frames, raw = resize(frames, raw, max(1, round(self.height * scale)), max(1, round(self.width * scale)))
        keys = [tuple(raw.intrinsics[j].tolist() + self.distortion[i].tolist() + target.intrinsics[j].tolist())
                for j, i in enumerate(indices)]
        groups = {key: [j for j, k in enumerate(keys) if k == key] for key in dict.fromkeys(keys)}
        # Only the source window a grid reads becomes float: a FoV zoom reads about ratio^2 of the frame.
        if len(groups) == 1:  # one lens and one output camera (the usual case): no gather, no scatter
            grid, (top, left, bottom, right) = self._grid(next(iter(groups)), raw, target, indices, 0)
            return remap(to_float(frames[:, top:bottom, left:right]), grid)
        out = torch.empty(len(indices), target.height, target.width, 3)
        for key, rows in groups.items():
            grid, (top, left, bottom, right) = self._grid(key, raw, target, indices, rows[0])
            out[rows] = remap(to_float(frames[rows, top:bottom, left:right]), grid)
        return out

    def _grid(self, key: tuple, raw: Cameras, target: Cameras, indices: list[int], j: int):
        """The undistortion grid of view j (of `indices`) and its source window, cached per lens and output camera."""
        key = (key, target.width, target.height)
        if key not in self._grids:
            if len(self._grids) >= _MAX_GRIDS:  # random FoV zooms make new keys every sample
                self._grids.pop(next(iter(self._grids)))
            grid = undistortion_grid(raw.intrinsics[j], self.distortion[indices[j]], target.intrinsics[j],
                                     target.width, target.height, raw.width, raw.height)
            self._grids[key] = grid_window(grid, raw.width, raw.height)
        return self._grids[key]


def check_poses(c2w: Tensor, names: list[str], where: str) -> None:
    """Raise SceneError naming the first frame whose pose is non-finite or not rigid."""
    finite = torch.isfinite(c2w).flatten(1).all(1)  # [N]
    if not finite.all():
        i = int((~finite).nonzero()[0])
        raise SceneError(f"{where}: frame {names[i]} has NaN or inf in its camera pose; fix or remove that frame")
    rot = c2w[:, :3, :3]
    gram_error = (rot.transpose(1, 2) @ rot - torch.eye(3, dtype=c2w.dtype)).abs().flatten(1).amax(1)
    det_error = (torch.linalg.det(rot) - 1).abs()
    row_error = (c2w[:, 3] - torch.tensor([0, 0, 0, 1], dtype=c2w.dtype)).abs().amax(1)
    bad = (gram_error > _RIGID_TOLERANCE) | (det_error > _RIGID_TOLERANCE) | (row_error > 1e-6)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise SceneError(
            f"{where}: frame {names[i]} has a singular or non-rigid camera pose (rotation det "
            f"{float(torch.linalg.det(rot[i])):.4g}, must be a rotation with det +1); fix or remove that frame"
        )


def as_c2w(c2w, where: str) -> Tensor:
    try:
        m = torch.as_tensor(np.asarray(c2w, dtype=np.float64))
    except (TypeError, ValueError):
        raise SceneError(f"{where}: camera poses are not numeric 4x4 matrices; fix the camera file") from None
    if m.dim() != 3 or m.shape[1:] not in ((4, 4), (3, 4)):
        raise SceneError(f"{where}: camera poses must be 4x4 (or 3x4) matrices, got shape {tuple(m.shape)}")
    if m.shape[1] == 3:
        bottom = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], dtype=m.dtype).expand(m.shape[0], 1, 4)
        m = torch.cat([m, bottom], 1)
    return m


def _common_size(names: list[str], sources: list[ImageSource], where: str, upright: bool) -> ImageSize:
    sizes: dict[ImageSize, list[str]] = {}
    for name, source in zip(names, sources, strict=True):
        if isinstance(source, Path) and not source.is_file():
            raise SceneError(f"{where}: frame image {source} does not exist; restore it or remove the frame")
        sizes.setdefault(image_size(source, name, upright), []).append(name)
    if len(sizes) > 1:
        shown = "; ".join(f"{s.width}x{s.height} (e.g. {v[0]}, {len(v)} frames)" for s, v in list(sizes.items())[:3])
        raise SceneError(f"{where}: frames have different image sizes ({shown}); one scene needs one image size, "
                         "resize the odd frames or split the scene")
    return next(iter(sizes))


def _check_intrinsics(intrinsics: Tensor, names: list[str], where: str) -> None:
    bad = ~torch.isfinite(intrinsics).all(1) | (intrinsics[:, :2] <= 0).any(1)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise SceneError(f"{where}: frame {names[i]} has invalid intrinsics {intrinsics[i].tolist()} "
                         "(focal lengths must be finite and positive); fix the camera file")


def _rescale(intrinsics: Tensor, sizes: Tensor, width: int, height: int, names: list[str], where: str) -> Tensor:
    """Intrinsics for calibration sizes [N, 2] -> the decoded width x height (continuous image plane).

    A NaN row means the frame's intrinsics already refer to the decoded size.
    """
    sizes = torch.where(torch.isnan(sizes), torch.tensor([float(width), float(height)], dtype=sizes.dtype), sizes)
    sx, sy = width / sizes[:, 0], height / sizes[:, 1]  # [N]
    if not (torch.isfinite(sx).all() and torch.isfinite(sy).all() and (sizes > 0).all()):
        raise SceneError(f"{where}: calibration image size must be positive (w, h); fix the camera file")
    mismatch = (sx / sy - 1).abs() > _ASPECT_TOLERANCE
    if mismatch.any():
        i = int(mismatch.nonzero()[0])
        raise SceneError(
            f"{where}: frame {names[i]} is {width}x{height} but its intrinsics are for "
            f"{int(sizes[i, 0])}x{int(sizes[i, 1])} (different aspect ratio); the images do not belong to this "
            "camera file"
        )
    return intrinsics * torch.stack([sx, sy, sx, sy], -1)


def _undistorted(raw: Tensor, coeffs: Tensor, width: int, height: int, where: str) -> Tensor:
    out = torch.empty_like(raw)
    cache: dict[tuple, Tensor] = {}
    for i in range(raw.shape[0]):
        key = tuple(raw[i].tolist() + coeffs[i].tolist())
        if key not in cache:
            try:
                cache[key] = undistorted_intrinsics(raw[i], coeffs[i], width, height)
            except ValueError as e:
                raise SceneError(f"{where}: {e}; undistort the images with a fisheye-capable tool first") from None
        out[i] = cache[key]
    return out
