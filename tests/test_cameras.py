import math

import pytest
import torch

from model.cameras import Cameras, invert_rigid, opengl_to_opencv
from model.tokenizer import pixel_features


def random_rotation(n: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[torch.det(q) < 0, :, 0] *= -1  # proper rotations only
    return q


def random_cameras(n=3, width=40, height=30, seed=0) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = random_rotation(n, g)
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 3
    intr = torch.tensor([35.0, 33.0, 19.3, 15.7], dtype=torch.float64).repeat(n, 1)
    return Cameras(intr, c2w, width, height)


def test_viewmats_invert_c2w():
    cams = random_cameras()
    assert torch.allclose(cams.viewmats, torch.linalg.inv(cams.c2w), atol=1e-12)
    assert torch.allclose(invert_rigid(cams.viewmats), cams.c2w, atol=1e-12)


def test_opengl_opencv_round_trip_and_known_example():
    cams = random_cameras()
    assert torch.equal(opengl_to_opencv(opengl_to_opencv(cams.c2w)), cams.c2w)
    # An OpenGL camera at the origin looking down world -z with y up is, in OpenCV axes, a camera
    # whose forward (z) axis is world -z and whose down (y) axis is world -y.
    gl = torch.eye(4, dtype=torch.float64)
    cv = opengl_to_opencv(gl)
    assert torch.equal(cv[:3, 2], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    assert torch.equal(cv[:3, 1], torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    assert torch.equal(cv[:3, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_Ks_layout():
    cams = random_cameras()
    K = cams.Ks[0]
    expected = torch.tensor([[35.0, 0, 19.3], [0, 33.0, 15.7], [0, 0, 1]], dtype=torch.float64)
    assert torch.equal(K, expected)


def test_rays_are_unit_and_pass_through_their_pixel_centres():
    cams = random_cameras()
    origins, dirs = cams.rays()
    assert origins.shape == dirs.shape == (3, 30, 40, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(3, 30, 40, dtype=torch.float64), atol=1e-12)
    points = (origins + 2.5 * dirs).reshape(3, -1, 3)
    xy, z = cams.project(points)
    jj, ii = torch.meshgrid(torch.arange(40.0), torch.arange(30.0), indexing="xy")
    centres = torch.stack([jj + 0.5, ii + 0.5], -1).reshape(-1, 2).double()
    assert torch.allclose(xy, centres.expand_as(xy), atol=1e-9)
    assert (z > 0).all()


def test_principal_point_ray_is_the_optical_axis():
    intr = torch.tensor([[50.0, 50.0, 2.0, 1.0]])  # principal point at the centre of a 4x2 image
    c2w = torch.eye(4)[None]
    cams = Cameras(intr, c2w, 4, 2)
    _, dirs = cams.rays()
    # pixel centres sit at x = 0.5 .. 3.5, y = 0.5, 1.5: symmetric about the optical axis
    mean_dir = dirs[0].reshape(-1, 3).mean(0)
    assert torch.allclose(mean_dir / mean_dir.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    expected_x = math.atan2(0.5, 50.0)
    assert math.isclose(math.atan2(dirs[0, 0, 2, 0].item(), dirs[0, 0, 2, 2].item()), expected_x, rel_tol=1e-5)


def test_plucker_moment_is_line_invariant_and_orthogonal():
    """The network's Plücker channels (model/tokenizer.py) of these cameras' rays."""
    cams = random_cameras()
    origins, dirs = cams.rays()
    features = pixel_features(torch.zeros_like(origins), origins, dirs)  # [3, 30, 40, 9]
    moment, direction = features[..., 3:6], features[..., 6:]
    assert torch.equal(direction, dirs)
    # the moment of a line does not depend on which point of the line is used
    other_point = origins + 7.0 * dirs
    assert torch.allclose(moment, torch.linalg.cross(other_point, dirs), atol=1e-10)
    assert torch.allclose((moment * direction).sum(-1), torch.zeros(3, 30, 40, dtype=torch.float64), atol=1e-12)


def test_bad_camera_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="intrinsics must be"):
        Cameras(torch.zeros(2, 3), torch.eye(4).repeat(2, 1, 1), 4, 4)
    with pytest.raises(ValueError, match="leading"):
        Cameras(torch.zeros(3, 4), torch.eye(4).repeat(2, 1, 1), 4, 4)
    with pytest.raises(ValueError, match="positive"):
        Cameras(torch.zeros(2, 4), torch.eye(4).repeat(2, 1, 1), 0, 4)
