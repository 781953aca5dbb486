import torch

from inference.camera_path import catmull_rom, smooth_path
from model.rotations import quat_to_matrix


def test_spline_passes_through_points_and_reproduces_lines():
    pts = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(catmull_rom(pts, torch.arange(6.0, dtype=torch.float64)), pts, atol=1e-12)
    # collinear, evenly spaced points: the spline is exactly the straight line, at constant speed
    line = torch.linspace(0, 5, 6, dtype=torch.float64)[:, None] * torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    t = torch.linspace(0, 5, 41, dtype=torch.float64)
    assert torch.allclose(catmull_rom(line, t), t[:, None] * torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64), atol=1e-12)


def test_path_visits_cameras_and_is_rigid():
    g = torch.Generator().manual_seed(1)
    c2w = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    c2w[:, :3, :3] = quat_to_matrix(torch.randn(4, 4, generator=g, dtype=torch.float64))
    c2w[:, :3, 3] = torch.randn(4, 3, generator=g, dtype=torch.float64)
    path = smooth_path(c2w, 31)  # frames 0, 10, 20, 30 land on the cameras
    assert torch.allclose(path[::10], c2w, atol=1e-9)
    rot = path[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(31, 3, 3), atol=1e-12)
