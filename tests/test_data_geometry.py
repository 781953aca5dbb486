"""Geometry the data layer must keep exact: intrinsics through resize/crop/FoV zoom, pose normalisation,
and mapping predicted Gaussians back to the original world."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.config import DataConfig, ResolutionConfig
from data.distortion import distort, undistort_points
from data.normalize import (
    denormalize_gaussians,
    denormalize_points,
    normalization_transform,
    normalize_poses,
    transform_c2w,
    transform_gaussians,
)
from data.pipeline import SampleBuilder
from data.procedural import ProceduralConfig, generate_scene
from data.resize import crop, full_frame_size, resize, view_box
from data.scene import Scene
from data.view_sampling import Selection
from model.cameras import Cameras
from model.gaussians import Gaussians
from model.render.sh import sh_to_color
from model.rotations import quat_to_matrix


@pytest.fixture(scope="module")
def proc():
    return generate_scene(ProceduralConfig.preset("tiny", seed=4, num_frames=10, width=96, height=54))


def ramp(n, h, w):
    """Images whose red/green channels are the continuous x/W, y/H of each pixel centre."""
    u = (torch.arange(w) + 0.5) / w
    v = (torch.arange(h) + 0.5) / h
    img = torch.stack([u[None, :].expand(h, w), v[:, None].expand(h, w), torch.full((h, w), 0.5)], -1)
    return img.expand(n, h, w, 3).clone()


def sample_at(images, xy):
    """Bilinear values of images [V, H, W, 3] at continuous pixel positions xy [V, P, 2] -> [V, P, 3]."""
    h, w = images.shape[1:3]
    grid = torch.stack([2 * xy[..., 0] / w - 1, 2 * xy[..., 1] / h - 1], -1)[:, None]  # [V, 1, P, 2]
    out = F.grid_sample(images.permute(0, 3, 1, 2), grid.float(), align_corners=False)  # [V, 3, 1, P]
    return out[:, :, 0].transpose(1, 2)


def inside(xy, w, h, margin):
    return (xy[..., 0] > margin) & (xy[..., 0] < w - margin) & (xy[..., 1] > margin) & (xy[..., 1] < h - margin)


def check_rays(out, new, source):
    """Every output pixel centre, through the new camera, must land where the ramp says it came from."""
    oh, ow = out.shape[1:3]
    ys, xs = torch.meshgrid(torch.arange(oh) + 0.5, torch.arange(ow) + 0.5, indexing="ij")
    fx, fy, cx, cy = new.intrinsics[0].tolist()
    ray = torch.stack([(xs - cx) / fx, (ys - cy) / fy], -1)
    expected = source(ray)  # [oh, ow, 2] source pixels
    got = out[0, ..., :2].float() * torch.tensor([source.width, source.height])
    if out.dtype == torch.uint8:
        got = got / 255
    keep = inside(expected, source.width, source.height, 3) & inside(torch.stack([xs, ys], -1), ow, oh, 3)
    assert keep.sum() > 100
    return (got - expected)[keep]


class Pinhole:
    def __init__(self, k, width, height):
        self.k, self.width, self.height = k, width, height

    def __call__(self, ray):
        return torch.stack([ray[..., 0] * self.k[0] + self.k[2], ray[..., 1] * self.k[1] + self.k[3]], -1)


@pytest.mark.parametrize("op", ["resize_down", "resize_up_aniso", "crop", "fov", "square", "square_fov",
                                "full_540_to_544", "uint8"])
def test_intrinsics_follow_every_pixel(op):
    h, w = 54, 96
    cams = Cameras(torch.tensor([[80.0, 82.0, 47.0, 28.5]]), torch.eye(4)[None], w, h)
    images = ramp(1, h, w)
    if op == "resize_down":
        out, new = resize(images, cams, 27, 48)
    elif op == "resize_up_aniso":
        out, new = resize(images, cams, 60, 100)
    elif op == "crop":
        out, new = crop(images, cams, 5, 11, 30, 40)
    elif op in ("fov", "square", "square_fov"):
        box = view_box(h, w, 1.0 if op == "square" else 0.8, square=op != "fov")
        out, new = crop(images, cams, *box)
        out, new = resize(out, new, *((32, 32) if op != "fov" else (h, w)))
    elif op == "uint8":
        out, new = resize(*crop((images * 255).round().to(torch.uint8), cams, 3, 7, 40, 80), 30, 60)
        assert out.dtype == torch.uint8
    else:
        images = ramp(1, 540, 960)
        cams = Cameras(torch.tensor([[800.0, 800.0, 480.0, 270.0]]), torch.eye(4)[None], 960, 540)
        out, new = resize(images, cams, *full_frame_size(540, 960))
        assert out.shape == (1, 544, 960, 3)
    error = check_rays(out, new, Pinhole(cams.intrinsics[0], cams.width, cams.height))  # source pixels
    # The antialiasing tent filter is not exact on a ramp at fractional scales (up to ~0.08 px of jitter),
    # but it has no bias; an off-by-half-pixel intrinsics update would be off by 0.2-0.5 px everywhere.
    tolerance = 0.3 if op == "uint8" else 0.1  # 8-bit ramp: 1/255 of 96 px
    assert error.abs().max() < tolerance and error.mean(0).abs().max() < 0.03


class Distorted(Pinhole):
    def __init__(self, k, coeffs, width, height):
        super().__init__(k, width, height)
        self.coeffs = coeffs

    def __call__(self, ray):
        return super().__call__(distort(ray.double(), self.coeffs).float())


@pytest.mark.parametrize("size", [(54, 96), (20, 36)])  # same scale, and much smaller (shrunk before undistorting)
def test_distorted_frames_are_resampled_through_the_lens(size):
    k = torch.tensor([80.0, 82.0, 47.0, 28.5], dtype=torch.float64)
    coeffs = torch.tensor([-0.15, 0.03, 0.002, -0.001], dtype=torch.float64)
    scene = Scene.from_frames("lens", ["a", "b"], list(ramp(2, 54, 96).numpy()), torch.eye(4).expand(2, 4, 4),
                              k.expand(2, 4), distortion=coeffs.expand(2, 4))
    box = view_box(54, 96, 0.9)
    images, cams = scene.load_views([1], crop=box, size=size)
    assert images.shape == (1, *size, 3) and images.dtype == torch.float32
    assert torch.allclose(cams.intrinsics[0, 2:], torch.tensor([(47.0 - box[1]) * size[1] / box[3],
                                                                 (28.5 - box[0]) * size[0] / box[2]]))
    error = check_rays(images, cams, Distorted(k.float(), coeffs, 96, 54))
    assert error.abs().max() < (0.1 if size == (54, 96) else 0.3) and error.mean(0).abs().max() < 0.03


@pytest.mark.parametrize("mode", ["square", "full"])
def test_projection_invariant_through_the_whole_pipeline(proc, mode):
    """A 3D point from the procedural depth, seen at pixel p, projects through every built view
    (zoomed, resized, cropped, normalised) onto content that came from where it projects originally."""
    config = DataConfig(resolution=ResolutionConfig(mode=mode, size=48, fov_min_ratio=0.8))
    builder = SampleBuilder(config, "train")
    selection = Selection(inputs=[4, 0, 2, 6], targets=[5, 4])
    scene = Scene.from_arrays("ramp", ramp(10, 54, 96), proc.intrinsics, proc.c2w)
    sample = builder.build(scene, selection, np.random.default_rng(1))
    rgb_scene = Scene.from_arrays("rgb", proc.images, proc.intrinsics, proc.c2w)
    rgb_sample = builder.build(rgb_scene, selection, np.random.default_rng(1))  # same draws, real content
    assert (sample.input_cameras.height, sample.input_cameras.width) == builder.output_size(54, 96)

    # 3D points seen by frame 4 (an input and a target)
    ys, xs = torch.meshgrid(torch.arange(4, 50, 3) + 0.5, torch.arange(4, 92, 3) + 0.5, indexing="ij")
    fx, fy, cx, cy = proc.intrinsics[4].double().tolist()
    z = proc.depth[4, ys.long(), xs.long()].double()
    cam_pts = torch.stack([(xs - cx) / fx * z, (ys - cy) / fy * z, z], -1).reshape(-1, 3)
    world = cam_pts @ proc.c2w[4, :3, :3].double().T + proc.c2w[4, :3, 3].double()  # [P, 3]
    m = sample.normalization
    normed = (world @ m[:3, :3].T + m[:3, 3]).float()

    frames = selection.inputs + selection.targets
    cams = Cameras.cat([sample.input_cameras, sample.target_cameras])
    images = torch.cat([sample.input_images, sample.target_images])
    rgb = torch.cat([rgb_sample.input_images, rgb_sample.target_images])
    xy_new, _ = cams.project(normed.expand(len(frames), -1, -1))  # [V, P, 2]
    original = Cameras(proc.intrinsics[frames], proc.c2w[frames], 96, 54)
    xy_old, z_old = original.project(world.float().expand(len(frames), -1, -1))
    keep = inside(xy_new, cams.width, cams.height, 3) & inside(xy_old, 96, 54, 3) & (z_old > 0)
    assert keep.sum() > 200
    decoded = sample_at(images, xy_new)[..., :2] * torch.tensor([96.0, 54.0])  # source pixel the content came from
    # occluded points decode to their occluder: compare only where the point is the visible surface
    depth_there = sample_at(proc.depth[frames][..., None].expand(-1, -1, -1, 3), xy_old)[..., 0]
    visible = (z_old - depth_there).abs() < 0.02 * z_old
    both = keep & visible
    assert both.sum() > 150
    assert (decoded - xy_old)[both].norm(dim=-1).median() < 0.05  # pixels of the original frame
    colours_new = sample_at(rgb, xy_new)
    colours_old = sample_at(proc.images[frames], xy_old)
    assert (colours_new - colours_old)[both].abs().median() < 0.03


def test_normalisation_properties():
    g = torch.Generator().manual_seed(0)
    rot = torch.linalg.qr(torch.randn(8, 3, 3, generator=g, dtype=torch.float64))[0]
    rot = rot * torch.linalg.det(rot)[:, None, None]  # proper rotations
    c2w = torch.eye(4, dtype=torch.float64).repeat(8, 1, 1)
    c2w[:, :3, :3] = rot
    c2w[:, :3, 3] = torch.randn(8, 3, generator=g, dtype=torch.float64) * 5 + 10
    inputs, targets, m = normalize_poses(c2w[:6], c2w[6:], scene_scale=1.35)
    assert torch.allclose(inputs[:, :3, 3].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert math.isclose(inputs[:, :3, 3].abs().max().item(), 1 / 1.35)
    for poses in (inputs, targets):
        r = poses[:, :3, :3]
        assert torch.allclose(r.transpose(1, 2) @ r, torch.eye(3, dtype=torch.float64).expand(len(r), 3, 3), atol=1e-12)
    assert torch.allclose(transform_c2w(m, c2w[6:]), targets)
    # mean forward axis becomes +z, mean down axis lies in the y-z plane with positive y
    fwd = inputs[:, :3, 2].mean(0)
    assert abs(fwd[0]) < 1e-12 and abs(fwd[1]) < 1e-12 and fwd[2] > 0
    assert abs(inputs[:, 0, 1].mean()) < 1e-12 and inputs[:, 1, 1].mean() > 0
    # any similarity change of the world gives the same normalised poses
    s = torch.eye(4, dtype=torch.float64)
    s[:3, :3] = 3.0 * rot[0]
    s[:3, 3] = torch.tensor([1.0, -2.0, 7.0], dtype=torch.float64)
    moved = transform_c2w(s, c2w)
    again = normalize_poses(moved[:6], moved[6:], scene_scale=1.35)
    assert torch.allclose(again[0], inputs, atol=1e-10) and torch.allclose(again[1], targets, atol=1e-10)
    # points round-trip
    pts = torch.randn(5, 3, dtype=torch.float64)
    normed = pts @ m[:3, :3].T + m[:3, 3]
    assert torch.allclose(denormalize_points(normed, m), pts, atol=1e-10)


def test_degenerate_mean_axes_fall_back_to_first_camera():
    # cameras on a circle all looking at its centre: the mean forward axis vanishes
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    c2w = torch.eye(4, dtype=torch.float64).repeat(8, 1, 1)
    for i, a in enumerate(angles):
        pos = torch.tensor([math.cos(a), 0.0, math.sin(a)], dtype=torch.float64) * 3
        fwd = -pos / pos.norm()
        down = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        c2w[i, :3, 0], c2w[i, :3, 1], c2w[i, :3, 2], c2w[i, :3, 3] = torch.linalg.cross(down, fwd), down, fwd, pos
    m = normalization_transform(c2w)
    assert torch.isfinite(m).all()
    first = transform_c2w(m, c2w[:1])[0]
    assert torch.allclose(first[:3, :3], torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_denormalize_gaussians_maps_geometry_and_colour(proc):
    m = normalization_transform(proc.c2w[:5].double(), scene_scale=1.2)
    g = torch.Generator().manual_seed(1)
    n = 50
    gauss = Gaussians(means=torch.randn(n, 3, generator=g), log_scales=torch.randn(n, 3, generator=g) - 2,
                      quats=torch.randn(n, 4, generator=g), opacity_logits=torch.randn(n, generator=g),
                      sh=torch.randn(n, 16, 3, generator=g) * 0.3)
    world = denormalize_gaussians(gauss, m)
    assert torch.allclose(world.means, denormalize_points(gauss.means, m), atol=1e-5)
    inv = torch.linalg.inv(m)
    k = inv[:3, 0].norm()
    r = (inv[:3, :3] / k).float()

    def cov(x):
        rq = quat_to_matrix(x.quats)
        return rq @ torch.diag_embed(x.scales**2) @ rq.transpose(1, 2)

    assert torch.allclose(cov(world), (k.float() ** 2) * (r @ cov(gauss) @ r.T), rtol=1e-4, atol=1e-7)
    assert torch.equal(world.opacity_logits, gauss.opacity_logits)
    dirs = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    assert torch.allclose(sh_to_color(3, dirs @ r.T, world.sh), sh_to_color(3, dirs, gauss.sh), atol=1e-5)
    # batched form: [B, N] Gaussians with [B, 4, 4] transforms
    batched = denormalize_gaussians(Gaussians.stack([gauss, gauss]), torch.stack([m, m]))
    assert torch.allclose(batched.means[1], world.means, atol=1e-6)
    assert torch.allclose(batched.sh[0], world.sh, atol=1e-6)
    # moved a few Gaussians at a time (what bounds the float64 copies of a large scene): the same values
    pieces = transform_gaussians(Gaussians.stack([gauss, gauss]), torch.linalg.inv(torch.stack([m, m])), chunk=7)
    for name in ("means", "log_scales", "quats", "sh"):
        assert torch.allclose(getattr(pieces, name), getattr(batched, name), rtol=1e-6, atol=1e-7)


def test_undistort_points_inverts_distort():
    coeffs = torch.tensor([-0.2, 0.05, 0.001, -0.002], dtype=torch.float64)
    xy = torch.rand(100, 2, dtype=torch.float64) - 0.5
    assert torch.allclose(undistort_points(distort(xy, coeffs), coeffs), xy, atol=1e-10)


def test_full_frame_sizes():
    assert full_frame_size(540, 960) == (544, 960)  # images_4, as the official code rounds it
    assert full_frame_size(270, 480) == (544, 960)  # images_8 upsampled to the same size
    assert full_frame_size(960, 540) == (960, 544)  # portrait keeps its orientation
    assert full_frame_size(36, 64, short_side=32) == (32, 64)
