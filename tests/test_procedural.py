"""Procedural scene generator: geometry, determinism, camera paths, DL3DV writer, CLI.

The oracles here (back-projection, projection, plane intersection, point-to-shape distances,
OpenGL->OpenCV conversion) are written independently of the generator's own code.
"""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from data.procedural import Layout, ProceduralConfig, generate_scene, raycast, render_views, write_dl3dv_scene
from data.procedural.__main__ import main as cli_main
from data.procedural.cameras import pixel_rays

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Like generate_scene, render with one thread: many mid-sized ops, where a second thread mostly waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def walk_scene():
    return generate_scene(ProceduralConfig(num_frames=40, width=128, height=72, seed=1, path="walk"))


def _look(position, forward):
    """c2w [4, 4] (OpenCV axes, world y up) for a camera at position looking along forward, level."""
    z = torch.tensor(forward, dtype=torch.float64)
    z = z / z.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, torch.tensor(position, dtype=torch.float64)
    return c2w


def _pixel_dirs_camera(k, width, height, offset=0.5):
    fx, fy, cx, cy = k.tolist()
    j, i = np.meshgrid(np.arange(width) + offset, np.arange(height) + offset)
    return np.stack([(j - cx) / fx, (i - cy) / fy, np.ones_like(j)], -1)  # [H, W, 3]


# ---------------------------------------------------------------- rays against known planes

def test_floor_depth_matches_analytic_plane_intersection():
    lo, hi = [-20.0, 0.0, -20.0], [20.0, 3.0, 20.0]
    layout = Layout.room_only(lo, hi, seed=0)
    width, height = 64, 40
    k = torch.tensor([50.0, 55.0, 30.3, 17.9])  # off-centre principal point, non-square pixels
    c2w = _look([0.3, 1.6, -0.7], [math.sin(0.35), -1.2, math.cos(0.35)])  # looking down at the floor
    _, depth = render_views(layout, c2w[None].float(), k[None], width, height)

    def floor_depth(offset):
        d_world = _pixel_dirs_camera(k, width, height, offset) @ c2w[:3, :3].numpy().T  # [H, W, 3]
        return (0.0 - 1.6) / d_world[..., 1], d_world  # camera z = 1 along each direction

    expected, d_world = floor_depth(0.5)
    hit = np.array([0.3, 1.6, -0.7]) + expected[..., None] * d_world
    on_floor = (d_world[..., 1] < 0) & (np.abs(hit[..., 0]) < 19) & (np.abs(hit[..., 2]) < 19)
    assert on_floor.mean() > 0.9
    rel = np.abs(depth[0].numpy() - expected) / expected
    assert rel[on_floor].max() < 1e-5
    # The same check without the +0.5 pixel-centre convention must fail: the tolerance is meaningful.
    wrong, _ = floor_depth(0.0)
    assert np.median(np.abs(depth[0].numpy() - wrong)[on_floor] / wrong[on_floor]) > 1e-3


def test_fronto_parallel_wall_has_constant_depth():
    layout = Layout.room_only([-4.0, 0.0, -3.0], [4.0, 3.0, 5.0], seed=1)
    c2w = _look([0.5, 1.5, 1.0], [0.0, 0.0, 1.0])  # looking straight at the wall z = 5
    k = torch.tensor([40.0, 40.0, 24.0, 16.0])
    _, depth = render_views(layout, c2w[None].float(), k[None], 48, 32)
    # Pixels near the centre see the wall (the floor and ceiling are 1.5 m away, the wall 4 m).
    centre = depth[0, 10:22, 12:36]
    torch.testing.assert_close(centre, torch.full_like(centre, 4.0), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- multi-view geometry

def _reproject(scene, a, b, c2w_b=None):
    """Back-project view a's depth, project into view b; returns (fraction of points whose depth b agrees,
    mask of agreeing points [H, W], their colour in a [n, 3], bilinear colour in b [n, 3])."""
    height, width = scene.depth.shape[1:]
    k_a, k_b = scene.intrinsics[a].double(), scene.intrinsics[b].double()
    c2w_a = scene.c2w[a].double()
    c2w_b = scene.c2w[b].double() if c2w_b is None else c2w_b
    z = scene.depth[a].double().numpy()
    cam_a = _pixel_dirs_camera(k_a, width, height) * z[..., None]  # [H, W, 3]
    world = cam_a @ c2w_a[:3, :3].numpy().T + c2w_a[:3, 3].numpy()
    w2c_b = torch.linalg.inv(c2w_b).numpy()
    cam_b = world @ w2c_b[:3, :3].T + w2c_b[:3, 3]
    fx, fy, cx, cy = k_b.tolist()
    zb = cam_b[..., 2]
    u = fx * cam_b[..., 0] / np.where(zb > 1e-6, zb, 1) + cx - 0.5  # continuous pixel index (centre = integer)
    v = fy * cam_b[..., 1] / np.where(zb > 1e-6, zb, 1) + cy - 0.5
    inside = (zb > 0.05) & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    u0 = np.clip(np.floor(u).astype(int), 0, width - 2)
    v0 = np.clip(np.floor(v).astype(int), 0, height - 2)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]

    def bilinear(img):  # img [H, W, C]
        return ((1 - fu) * (1 - fv) * img[v0, u0] + fu * (1 - fv) * img[v0, u0 + 1]
                + (1 - fu) * fv * img[v0 + 1, u0] + fu * fv * img[v0 + 1, u0 + 1])

    # Inverse depth is affine in pixel coordinates on a plane, so bilinear sampling of it is near exact.
    inv_b = bilinear(1.0 / scene.depth[b].double().numpy()[..., None])[..., 0]
    agree = inside & (np.abs(inv_b * zb - 1) < 5e-3)
    colour_b = bilinear(scene.images[b].double().numpy())
    return agree.sum() / max(inside.sum(), 1), agree, scene.images[a].double().numpy()[agree], colour_b[agree]


def test_backprojected_depth_lands_on_the_same_surface_in_other_views(walk_scene):
    for a, b in [(0, 3), (10, 16), (25, 20)]:
        fraction, _, _, _ = _reproject(walk_scene, a, b)
        assert fraction > 0.85, (a, b, fraction)
    # Negative control: with another view's pose in place of view b's, the agreement collapses.
    wrong, _, _, _ = _reproject(walk_scene, 0, 3, c2w_b=walk_scene.c2w[30].double())
    assert wrong < 0.5


def test_same_surface_point_has_the_same_colour_in_every_view(walk_scene):
    for a, b in [(0, 3), (10, 16)]:
        _, agree, colour_a, colour_b = _reproject(walk_scene, a, b)
        assert agree.sum() > 1000
        diff = np.abs(colour_a - colour_b).max(-1)
        # Bilinear resampling blurs texture edges, so compare typical points, not every point.
        assert np.median(diff) < 0.02, np.median(diff)
        assert (diff < 0.1).mean() > 0.85, (diff < 0.1).mean()


def test_culling_is_lossless(walk_scene, monkeypatch):
    # Brute force: every ray against every object, for camera rays and shadow rays alike.
    layout, views = walk_scene.layout, [0, 17, 33]
    height, width = walk_scene.depth.shape[1:]
    origins, dirs = pixel_rays(walk_scene.c2w[views], walk_scene.intrinsics[views], width, height)
    num_rays, num_objects = len(views) * height * width, layout.num_objects

    def all_pairs(origins, direction, centres, radius):
        n = len(origins)
        return torch.arange(n).repeat_interleave(num_objects), torch.arange(num_objects).repeat(n)

    monkeypatch.setattr(raycast, "parallel_ray_pairs", all_pairs)
    everything = (torch.arange(num_rays).repeat_interleave(num_objects), torch.arange(num_objects).repeat(num_rays))
    colour, t = raycast.trace(layout, origins.repeat_interleave(height * width, 0), dirs.reshape(-1, 3), everything)
    assert torch.equal(t.reshape(len(views), height, width), walk_scene.depth[views])
    assert torch.equal(colour.reshape(len(views), height, width, 3), walk_scene.images[views])


# ---------------------------------------------------------------- scenes and cameras

def test_images_are_textured_and_valid(walk_scene):
    s = walk_scene
    assert s.images.shape == (40, 72, 128, 3) and s.images.dtype == torch.float32
    assert s.depth.shape == (40, 72, 128) and s.intrinsics.shape == (40, 4) and s.c2w.shape == (40, 4, 4)
    assert s.images.min() >= 0 and s.images.max() <= 1
    assert torch.isfinite(s.depth).all() and s.depth.min() > 0.1
    per_view_std = s.images.reshape(40, -1, 3).std(1).mean(-1)
    assert per_view_std.min() > 0.03  # no flat, single-colour frames
    assert s.images.mean() > 0.15  # not black
    fov = math.degrees(2 * math.atan(128 / 2 / s.intrinsics[0, 0].item()))
    assert 60 <= fov <= 70
    torch.testing.assert_close(s.intrinsics[:, 2:], torch.tensor([[64.0, 36.0]]).expand(40, 2))
    assert s.layout.num_objects > 0


def test_same_seed_is_bit_identical_and_seeds_differ():
    config = ProceduralConfig.preset("tiny", num_frames=6, seed=5)
    first, second = generate_scene(config), generate_scene(config)
    for name in ("images", "depth", "intrinsics", "c2w"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    other = generate_scene(config.replace(seed=6))
    assert not torch.equal(first.images, other.images)
    assert not torch.equal(first.c2w, other.c2w)


def _distance_to_object(points, kind, centre, rotation, size):
    """Euclidean distance from world points [N, 3] to one box / sphere / vertical cylinder (>= 0 outside)."""
    p = (points - centre) @ rotation.T  # local coordinates
    if kind == 0:
        return np.linalg.norm(np.maximum(np.abs(p) - size, 0), axis=-1)
    if kind == 1:
        return np.linalg.norm(p, axis=-1) - size[0]
    radial = np.maximum(np.hypot(p[:, 0], p[:, 2]) - size[0], 0)
    vertical = np.maximum(np.abs(p[:, 1]) - size[1], 0)
    return np.hypot(radial, vertical)


@pytest.mark.parametrize("path", ["walk", "forward", "orbit"])
def test_cameras_stay_in_the_room_clear_of_objects_and_move_smoothly(path):
    for seed in range(3):
        config = ProceduralConfig(num_frames=120, width=8, height=6, seed=seed, path=path)
        s = generate_scene(config)
        c2w = s.c2w.double()
        rot, pos = c2w[:, :3, :3], c2w[:, :3, 3]
        torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand(120, 3, 3),
                                   atol=1e-5, rtol=0)
        assert torch.allclose(torch.linalg.det(rot), torch.ones(120, dtype=torch.float64), atol=1e-5)
        assert torch.equal(c2w[:, 3], torch.tensor([0.0, 0, 0, 1], dtype=torch.float64).expand(120, 4))

        room_lo, room_hi = s.layout.room_min.double(), s.layout.room_max.double()
        assert (pos >= room_lo + config.clearance - 1e-5).all() and (pos <= room_hi - config.clearance + 1e-5).all()
        lay = s.layout
        for i in range(lay.num_objects):
            dist = _distance_to_object(pos.numpy(), lay.kinds[i].item(), lay.centres[i].double().numpy(),
                                       lay.rotations[i].double().numpy(), lay.sizes[i].double().numpy())
            assert dist.min() >= config.clearance - 1e-4, (path, seed, i, dist.min())

        # Smooth, bounded motion: at most 0.2 m and 5 degrees per frame, no jolts (second differences).
        step = (pos[1:] - pos[:-1]).norm(dim=-1)
        jolt = (pos[2:] - 2 * pos[1:-1] + pos[:-2]).norm(dim=-1)
        rel = rot[:-1].transpose(1, 2) @ rot[1:]
        angle = torch.rad2deg(torch.arccos(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
        assert step.max() < 0.2 and angle.max() < 5.0 and jolt.max() < 0.02, (path, seed)
        assert step.sum() > 0.3  # the camera does move
        # Level horizon, as in hand-held video: the camera x axis stays nearly horizontal.
        assert rot[:, 1, 0].abs().max() < 0.05


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("changes, message", [
    ({"width": 0}, "width must be a positive integer"),
    ({"height": -4}, "height must be a positive integer"),
    ({"num_frames": 0}, "num_frames must be a positive integer"),
    ({"path": "spiral"}, "unknown camera path kind 'spiral'"),
    ({"num_objects": -1}, "num_objects must be"),
    ({"fov_x_deg": 0.0}, "fov_x_deg must lie in"),
])
def test_bad_config_raises_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        ProceduralConfig(**changes)
    with pytest.raises(ValueError, match=message):
        generate_scene(**changes)


def test_bad_render_arguments_raise():
    layout = Layout.room_only([-1.0, 0, -1], [1.0, 2, 1])
    with pytest.raises(ValueError, match="image size must be positive"):
        render_views(layout, torch.eye(4)[None], torch.tensor([[10.0, 10, 5, 5]]), 0, 10)
    with pytest.raises(ValueError, match="expected c2w"):
        render_views(layout, torch.eye(4), torch.tensor([10.0, 10, 5, 5]), 10, 10)
    with pytest.raises(ValueError, match="unknown procedural preset"):
        ProceduralConfig.preset("huge")


# ---------------------------------------------------------------- DL3DV writer and command line

@pytest.fixture(scope="module")
def tiny_scene():
    return generate_scene(ProceduralConfig(num_frames=5, width=40, height=24, seed=2, path="orbit"))


@pytest.mark.parametrize("image_dir", ["images_4", "images_8"])
def test_transforms_json_round_trip(tiny_scene, tmp_path, image_dir):
    out = write_dl3dv_scene(tiny_scene, tmp_path / "scene", image_dir=image_dir)
    meta = json.loads((out / "transforms.json").read_text())
    fx, fy, cx, cy = tiny_scene.intrinsics[0].tolist()
    assert (meta["w"], meta["h"], meta["camera_model"]) == (40, 24, "OPENCV")
    assert (meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]) == pytest.approx((fx, fy, cx, cy))
    assert all(meta[key] == 0 for key in ("k1", "k2", "p1", "p2"))
    assert len(meta["frames"]) == 5
    for i, frame in enumerate(meta["frames"]):
        assert frame["file_path"] == f"{image_dir}/frame_{i + 1:05d}.png"
        gl = np.array(frame["transform_matrix"])
        opencv = gl @ np.diag([1.0, -1.0, -1.0, 1.0])  # flip the camera y and z axes
        np.testing.assert_allclose(opencv, tiny_scene.c2w[i].double().numpy(), atol=1e-7)
        png = np.asarray(Image.open(out / frame["file_path"]), dtype=np.float64) / 255
        assert png.shape == (24, 40, 3)
        assert np.abs(png - tiny_scene.images[i].double().numpy()).max() <= 0.5 / 255 + 1e-6


def test_writer_refuses_non_empty_folder_and_never_deletes(tiny_scene, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        write_dl3dv_scene(tiny_scene, tmp_path)
    write_dl3dv_scene(tiny_scene, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "transforms.json").is_file()
    with pytest.raises(ValueError, match="image_dir"):
        write_dl3dv_scene(tiny_scene, tmp_path / "other", image_dir="../escape")


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli_scene"
    assert cli_main(["--out", str(out), "--frames", "3", "--width", "32", "--height", "18", "--seed", "4",
                     "--path", "forward"]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(json.loads((out / "transforms.json").read_text())["frames"]) == 3
    assert sorted(p.name for p in (out / "images_4").iterdir()) == [f"frame_0000{i}.png" for i in (1, 2, 3)]
    with pytest.raises(SystemExit) as err:  # non-empty folder without --overwrite
        cli_main(["--out", str(out), "--frames", "3"])
    assert err.value.code == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path / "x"), "--width", "0"])
    assert "width must be a positive integer" in capsys.readouterr().err


def test_sizes_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    # 20000x20000: more pixels than the image readers open, refused before a byte is allocated.
    with pytest.raises(SystemExit) as err:
        cli_main(["--out", str(tmp_path / "huge"), "--width", "20000", "--height", "20000"])
    message = capsys.readouterr().err
    assert err.value.code == 2 and message.count("\n") == 1
    assert message.startswith("error: 20000x20000 frames have 400,000,000 pixels, more than the 89,478,485")
    assert not (tmp_path / "huge").exists()
    # Within the readers' limit but not within memory: refused with a size that fits.
    available = 2**30
    monkeypatch.setattr("data.procedural.__main__.psutil.virtual_memory", lambda: SimpleNamespace(available=available))
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path / "big"), "--width", "4000", "--height", "2000", "--frames", "120"])
    message = capsys.readouterr().err
    # 120 x 8e6 pixels x 40 B + 8e6 rays x 512 B = 42.5e9 B
    assert "error: 120 frames of 4000x2000 need about 39.6 GiB of memory and 1.0 GiB are available; " in message
    width, height = map(int, message.split("at most about ")[1].split(" fit")[0].split("x"))
    assert abs(width / height - 2) < 0.01  # same aspect ratio
    assert ProceduralConfig(num_frames=120, width=width, height=height).memory_bytes() <= available
    assert ProceduralConfig(num_frames=120, width=width + 2, height=height + 1).memory_bytes() > available


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "data.procedural", "--out", str(tmp_path / "s"), "--frames", "2",
                             "--width", "16", "--height", "12"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 2 frames" in result.stdout
