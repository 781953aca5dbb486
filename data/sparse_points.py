"""A scene's sparse structure-from-motion points (COLMAP points3D), in the scene's own world frame.

graphdeco starts 3DGS from these points. They are read (through pycolmap) from the COLMAP model
found under the scene folder where `colmap_models` looks: the scene's own model when it is a
COLMAP scene, the model DL3DV ships next to its transforms.json (colmap/sparse/0), or the one the
poses pipeline wrote. The scene's cameras may live in another world frame than the model's:
nerfstudio files (DL3DV) are written after a change of axes, and any re-posing tool may move,
turn or scale the world. So the points are moved by the similarity that maps the model's cameras
onto the scene's, matched by image file name: its rotation from the cameras' orientations (stable
even for a camera on a straight track, where centres alone leave the roll free), its scale and
translation from their centres. For the scene's own model it is the identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.cameras import invert_rigid

from .colmap import choose_model, colmap_models
from .errors import SceneError
from .scene import Scene

MAX_RESIDUAL = 0.05  # of the cameras' spread: beyond it the model's cameras are not the scene's


def read_sparse_model(model_dir: str | Path) -> tuple[Tensor, Tensor, list[str], Tensor]:
    """(points [P, 3] float64 in id order, colours [P, 3] float in [0, 1], image names [M], camera-to-world
    [M, 4, 4] float64 of the registered images), all in the model's own world frame."""
    try:
        import pycolmap
    except ImportError:
        raise SceneError("reading COLMAP points needs the optional package pycolmap: pip install pycolmap") from None
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError subclasses on malformed files
        raise SceneError(f"COLMAP model {model_dir} cannot be read ({e}); re-export it") from None
    points = [point for _, point in sorted(rec.points3D.items())]  # by id: the map's order is arbitrary
    xyz = torch.tensor(np.array([p.xyz for p in points], dtype=np.float64).reshape(-1, 3))
    rgb = torch.tensor(np.array([p.color for p in points], dtype=np.float64).reshape(-1, 3)) / 255
    images = [im for im in rec.images.values() if getattr(im, "has_pose", True)]
    names = [im.name for im in images]
    w2c = []
    for im in images:
        pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world  # method in pycolmap 4
        m = np.eye(4)
        m[:3] = np.asarray(pose.matrix(), dtype=np.float64)
        w2c.append(m)
    c2w = invert_rigid(torch.tensor(np.array(w2c).reshape(-1, 4, 4)))
    return xyz, rgb, names, c2w


def align_similarity(src_c2w: Tensor, dst_c2w: Tensor) -> Tensor:
    """The similarity M [4, 4] (float64) with dst ~ M src for matched cameras src_c2w, dst_c2w [M, 4, 4].

    Rotation: the orthogonal matrix closest to the sum of the per-camera rotations dst_R src_R^T
    (the chordal mean); then scale and translation by least squares on the camera centres.
    """
    src, dst = src_c2w.double(), dst_c2w.double()
    u, _, vt = torch.linalg.svd((dst[:, :3, :3] @ src[:, :3, :3].transpose(1, 2)).sum(0))
    d = torch.ones(3, dtype=torch.float64)
    d[2] = torch.sign(torch.linalg.det(u @ vt))
    rot = u @ torch.diag(d) @ vt
    a, b = src[:, :3, 3], dst[:, :3, 3]
    a0, b0 = a - a.mean(0), b - b.mean(0)
    spread = float((a0 * a0).sum())
    if spread <= 1e-12:
        raise SceneError("the COLMAP model's cameras matched to the scene's all sit at one point, so its scale "
                         "relative to the scene is unknown")
    scale = float((b0 * (a0 @ rot.T)).sum()) / spread
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = scale * rot
    m[:3, 3] = b.mean(0) - scale * rot @ a.mean(0)
    return m


def scene_points(scene: Scene, scene_dir: str | Path) -> tuple[Tensor, Tensor]:
    """The COLMAP points under `scene_dir` in `scene`'s world frame: (points [P, 3] float64, colours
    [P, 3] in [0, 1]). SceneError when there is no model, no point, or its cameras are not the scene's."""
    scene_dir = Path(scene_dir)
    folder = scene_dir.parent if scene_dir.is_file() else scene_dir
    models = colmap_models(folder)
    if not models:
        raise SceneError(f"{scene_dir} has no COLMAP model with points (sparse/0, sparse or colmap/sparse/0 holding "
                         "cameras, images and points3D); run structure from motion on it first or start from "
                         "random points")
    model_dir, _ = choose_model(models, None)  # the model a scene read from this folder uses
    xyz, rgb, names, c2w = read_sparse_model(model_dir)
    if len(xyz) == 0:
        raise SceneError(f"COLMAP model {model_dir} has no 3D points (points3D is empty); run its triangulation "
                         "first or start from random points")
    frames = {Path(name).name: i for i, name in enumerate(scene.names)}
    pairs = [(j, frames[Path(name).name]) for j, name in enumerate(names) if Path(name).name in frames]
    if len(pairs) < 2:
        raise SceneError(f"COLMAP model {model_dir} shares {len(pairs)} image name(s) with the scene's frames; "
                         "at least 2 are needed to place its points in the scene's world frame")
    src = c2w[[j for j, _ in pairs]]
    dst = scene.c2w[[i for _, i in pairs]].double()
    m = align_similarity(src, dst)
    moved = (m[:3, :3] @ src[:, :3, 3].T).T + m[:3, 3]  # [M, 3] model centres in the scene's frame
    centres = dst[:, :3, 3]
    spread = float((centres - centres.mean(0)).norm(dim=-1).max())
    residual = float((moved - centres).norm(dim=-1).max())
    if residual > MAX_RESIDUAL * spread:
        raise SceneError(f"COLMAP model {model_dir} does not match the scene's cameras: after the best similarity its "
                         f"camera centres are up to {residual:.3g} away from the scene's ({residual / spread:.0%} of "
                         "their spread); was it made from other photos?")
    return xyz @ m[:3, :3].T + m[:3, 3], rgb
