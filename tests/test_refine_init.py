"""Starting Gaussians for classic 3DGS: graphdeco's point-cloud initialisation and random points."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.procedural import ProceduralConfig, generate_scene
from model.cameras import Cameras
from model.gaussians import SH_C0
from refine.init import RANDOM_DEPTH, from_points, random_init, random_points
from refine.params import scene_extent

ROOT = Path(__file__).resolve().parent.parent


def brute_force_scales(points: torch.Tensor) -> torch.Tensor:
    """sqrt(mean squared distance to the 3 nearest other points), from all pairwise distances."""
    d = torch.cdist(points.double(), points.double())
    d.fill_diagonal_(math.inf)
    return d.topk(3, largest=False).values.square().mean(-1).sqrt()


def test_scales_colours_and_opacity_follow_graphdeco():
    # A regular grid with spacing 0.25: an interior point's 3 nearest neighbours are all 0.25 away.
    axis = torch.arange(5) * 0.25
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    colors = torch.rand(len(grid), 3, generator=torch.Generator().manual_seed(0))
    g = from_points(grid, colors)
    interior = ((grid > 0) & (grid < 1)).all(-1)
    assert torch.allclose(g.log_scales[interior].exp(), torch.full((int(interior.sum()), 3), 0.25), atol=1e-6)
    assert torch.allclose(g.log_scales.exp()[:, 0], brute_force_scales(grid).float(), atol=1e-6)
    assert torch.allclose(0.5 + SH_C0 * g.sh[:, 0], colors, atol=1e-6) and not g.sh[:, 1:].any()
    assert g.sh_degree == 3 and torch.allclose(g.opacities, torch.full((len(grid),), 0.1))
    assert torch.equal(g.quats, torch.tensor([1.0, 0, 0, 0]).expand(len(grid), 4))


def test_nearest_neighbours_survive_flushed_denormals():
    # The commands flush denormals to zero; scipy's cKDTree then crashed the whole process on clouds
    # like this one (a floor plane plus objects). Run in a child so a crash fails the test, not the suite.
    code = (
        "import json, torch\n"
        "torch.set_flush_denormal(True)\n"
        "from refine.init import from_points\n"
        "g = torch.Generator().manual_seed(0)\n"
        "floor = torch.rand(1000, 3, generator=g, dtype=torch.float64); floor[:, 1] = 0\n"
        "points = torch.cat([floor, torch.rand(1000, 3, generator=g, dtype=torch.float64)])\n"
        "print(json.dumps(from_points(points, torch.rand(2000, 3)).log_scales[:, 0].exp().tolist()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    g = torch.Generator().manual_seed(0)
    floor = torch.rand(1000, 3, generator=g, dtype=torch.float64)
    floor[:, 1] = 0
    points = torch.cat([floor, torch.rand(1000, 3, generator=g, dtype=torch.float64)])
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]), dtype=torch.float64)
    assert torch.allclose(got, brute_force_scales(points), rtol=1e-5)


def camera_space(cams: Cameras, points: torch.Tensor):
    """Points [N, 3] seen by cameras [V]: (depth z [V, N], pixel u [V, N], pixel v [V, N])."""
    w2c = torch.linalg.inv(cams.c2w.double())
    local = (w2c[:, None, :3, :3] @ points.double()[None, :, :, None])[..., 0] + w2c[:, None, :3, 3]
    fx, fy, cx, cy = (k[:, None] for k in cams.intrinsics.double().unbind(-1))
    z = local[..., 2]
    return z, fx * local[..., 0] / z + cx, fy * local[..., 1] / z + cy


def test_random_points_fill_the_input_frusta_log_uniformly():
    s = generate_scene(ProceduralConfig.preset("tiny", num_frames=6, width=40, height=24, seed=1))
    cams = Cameras(s.intrinsics, s.c2w, 40, 24)
    # One camera: depths log-uniform between near and far, pixels inside the image.
    z, u, v = camera_space(cams[:1], random_points(cams[:1], 20_000, 0.5, 8.0, torch.Generator().manual_seed(0)))
    assert ((u >= 0) & (u <= 40) & (v >= 0) & (v <= 24)).all()
    fraction = (z[0].log() - math.log(0.5)) / math.log(8.0 / 0.5)  # uniform in [0, 1] when log-uniform
    assert fraction.min() >= -1e-6 and fraction.max() <= 1 + 1e-6
    assert torch.allclose(torch.quantile(fraction, torch.tensor([0.25, 0.5, 0.75], dtype=fraction.dtype)),
                          torch.tensor([0.25, 0.5, 0.75], dtype=fraction.dtype), atol=0.02)
    # The default start: a point per 16 input pixels, each seen by some input camera within the default range.
    g = random_init(cams, generator=torch.Generator().manual_seed(0))
    assert g.count == 6 * 40 * 24 // 16
    z, u, v = camera_space(cams, g.means)
    extent = scene_extent(cams)
    near, far = RANDOM_DEPTH[0] * extent, RANDOM_DEPTH[1] * extent
    seen = (z > near * (1 - 1e-4)) & (z < far * (1 + 1e-4)) & (u >= -1e-3) & (u <= 40.001) & (v >= -1e-3) & (v <= 24.001)
    assert seen.any(0).all()
    with pytest.raises(ValueError, match="near < far"):
        random_init(cams, 10, near=1.0, far=0.5)
