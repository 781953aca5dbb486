"""What the viewer shows, read from disk: Gaussians from a PLY and, when there, the cameras and images.

PATH may be a PLY file or a folder holding one (`infer.py --out`: gaussians.ply; a refinement output:
refined.ply). Cameras come from `cameras.json` next to the PLY (infer.py's layout: OpenCV c2w in the
PLY's world frame, intrinsics at the network's resolution); their images from `inputs/<frame>.png`
(what the network saw) and `renders/<frame>_gt.png` (held-out ground truth), when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from model.gaussians import Gaussians
from model.ply import load_ply

PLY_NAMES = ("gaussians.ply", "refined.ply")  # looked for in this order inside a folder


@dataclass
class ViewCamera:
    name: str
    role: str  # "input" or "held-out"
    c2w: np.ndarray  # [4, 4] camera-to-world, OpenCV axes
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    image: np.ndarray | None  # [h, w, 3] uint8, any size with the camera's aspect

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians (the principal point is taken as the image centre)."""
        return float(2 * np.arctan(self.height / (2 * self.fy)))


@dataclass
class Reconstruction:
    ply: Path
    gaussians: Gaussians  # one scene, means [N, 3]
    cameras: list[ViewCamera]


def find_ply(path: Path) -> Path:
    """The PLY that PATH names: PATH itself, or the reconstruction inside the folder PATH."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a .ply file or an infer.py output folder")
    if path.is_file():
        return path
    for name in PLY_NAMES:
        if (path / name).is_file():
            return path / name
    plys = sorted(p.name for p in path.glob("*.ply") if not p.name.endswith(".compressed.ply"))
    if len(plys) == 1:
        return path / plys[0]
    if not plys:
        raise FileNotFoundError(f"{path} holds no .ply file; pass a .ply file or an infer.py output folder")
    raise ValueError(f"{path} holds several PLY files ({', '.join(plys)}); pass the one to show")


def read_cameras(path: Path) -> list[ViewCamera]:
    """Input and held-out cameras from infer.py's cameras.json, with their images when saved."""
    try:
        data = json.loads(path.read_text())
        width, height = int(data["width"]), int(data["height"])
        groups = [("input", data["inputs"]), ("held-out", data["targets"])]
        cameras = []
        for role, entries in groups:
            for e in entries:
                c2w = np.asarray(e["c2w"], dtype=np.float64)
                if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
                    raise ValueError(f"camera {e['frame']!r} has no finite 4x4 c2w")
                stem = Path(e["frame"]).stem
                image = path.parent / ("inputs" if role == "input" else "renders") / (
                    f"{stem}.png" if role == "input" else f"{stem}_gt.png")
                cameras.append(ViewCamera(stem, role, c2w, float(e["fx"]), float(e["fy"]), float(e["cx"]),
                                          float(e["cy"]), width, height,
                                          iio.imread(image)[..., :3] if image.is_file() else None))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a cameras.json written by infer.py ({err})") from None
    return cameras


def open_reconstruction(path: Path) -> Reconstruction:
    ply = find_ply(path)
    gaussians = load_ply(ply)
    if gaussians.count == 0:
        raise ValueError(f"{ply} holds no Gaussians: the reconstruction is empty (was every Gaussian pruned? "
                         "try a lower --min-opacity in infer.py)")
    cameras_json = ply.parent / "cameras.json"
    cameras = read_cameras(cameras_json) if cameras_json.is_file() else []
    return Reconstruction(ply, gaussians, cameras)


def cap_by_opacity(gaussians: Gaussians, max_gaussians: int) -> tuple[Gaussians, float]:
    """Keep the `max_gaussians` most opaque: (kept Gaussians, highest opacity among the dropped or 0)."""
    if gaussians.count <= max_gaussians:
        return gaussians, 0.0
    kept = gaussians.prune(keep_ratio=max_gaussians / gaussians.count)
    opacities = gaussians.opacities
    dropped = float(opacities.sort(descending=True).values[kept.count])
    return kept, dropped
