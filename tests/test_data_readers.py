"""Scene readers: nerfstudio (hand-checked conventions), DL3DV raw/benchmark, official opencv_cameras.json,
COLMAP, layout detection, and lens undistortion against an exact re-render."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data.colmap import read_colmap
from data.distortion import undistort_points
from data.dl3dv.scene import read_dl3dv
from data.errors import SceneError
from data.nerfstudio import read_nerfstudio
from data.normalize import normalize_poses
from data.open_scene import detect_layout, find_scenes, open_scene
from data.procedural import ProceduralConfig, generate_scene, render_views, write_dl3dv_scene
from model.cameras import invert_rigid


@pytest.fixture(scope="module")
def proc():
    return generate_scene(ProceduralConfig.preset("tiny", seed=7, num_frames=12))


def _save_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8)).save(path)


def write_dl3dv_raw(proc, folder, scale=4, image_dir="images_4"):
    """DL3DV-10K raw layout: intrinsics at `scale` x the stored size, file_path naming images/."""
    write_dl3dv_scene(proc, folder, image_dir=image_dir)
    meta = json.loads((folder / "transforms.json").read_text())
    for key in ("w", "h", "fl_x", "fl_y", "cx", "cy"):
        meta[key] *= scale
    for f in meta["frames"]:
        f["file_path"] = "images/" + f["file_path"].split("/")[-1]
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def test_nerfstudio_hand_written_conventions(tmp_path):
    # One OpenGL camera at (1, 2, 3) with identity rotation: it looks down world -z with world +y up.
    _save_png(tmp_path / "imgs" / "a.png", np.full((4, 8, 3), 0.5))
    meta = {"w": 16, "h": 8, "fl_x": 20.0, "fl_y": 22.0, "cx": 8.0, "cy": 4.0, "camera_model": "PINHOLE",
            "frames": [{"file_path": "imgs/a.png",
                        "transform_matrix": [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = read_nerfstudio(tmp_path)
    expected = torch.tensor([[1, 0, 0, 1], [0, -1, 0, 2], [0, 0, -1, 3], [0, 0, 0, 1]], dtype=torch.float64)
    assert torch.equal(scene.c2w[0], expected)  # OpenCV z (forward) points along world -z, y (down) along -y
    # intrinsics were for 16x8, the image is 8x4: everything halves (continuous image plane)
    assert scene.intrinsics[0].tolist() == [10.0, 11.0, 4.0, 2.0]
    cams = scene.cameras()
    ahead = torch.tensor([[[1.0, 2.0, -2.0], [1.0, 2.5, -2.0], [1.5, 2.0, -2.0]]])  # 5 units in front; above; right
    xy, z = cams.project(ahead)
    assert torch.allclose(z, torch.tensor([[5.0, 5.0, 5.0]]))
    assert torch.allclose(xy[0, 0], torch.tensor([4.0, 2.0]))  # on the principal point
    assert xy[0, 1, 1] < 2.0  # world up appears higher in the image (smaller row)
    assert xy[0, 2, 0] > 4.0  # world +x appears to the right


def test_nerfstudio_per_frame_intrinsics(tmp_path, proc):
    write_dl3dv_scene(proc, tmp_path)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    fx = meta.pop("fl_x")
    for i, f in enumerate(meta["frames"]):
        f["fl_x"] = fx * (1 + 0.01 * i)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = read_nerfstudio(tmp_path)
    expected = torch.tensor([fx * (1 + 0.01 * i) for i in range(12)], dtype=torch.float64)
    assert torch.allclose(scene.intrinsics[:, 0], expected)
    assert torch.allclose(scene.intrinsics[:, 1], torch.full((12,), meta["fl_y"], dtype=torch.float64))


def test_dl3dv_raw_rescales_to_decoded_images(tmp_path, proc):
    folder = write_dl3dv_raw(proc, tmp_path / "0a1b2c")
    scene = read_dl3dv(folder)
    assert scene.scene_id == "0a1b2c" and len(scene) == 12 and (scene.width, scene.height) == (64, 36)
    assert torch.allclose(scene.intrinsics.float(), proc.intrinsics, atol=1e-5)
    assert torch.allclose(scene.c2w.float(), proc.c2w, atol=1e-6)
    images, cams = scene.load_views([3, 0])
    assert (images - proc.images[[3, 0]]).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNG round trip
    assert torch.allclose(cams.c2w, proc.c2w[[3, 0]], atol=1e-6)


def test_dl3dv_benchmark_layout_and_images_8(tmp_path, proc):
    folder = tmp_path / "ffee00"
    write_dl3dv_raw(proc, folder / "nerfstudio", scale=8, image_dir="images_8")
    assert detect_layout(folder) == "dl3dv"
    scene = open_scene(folder)  # no images_4: falls back to images_8
    assert scene.scene_id == "ffee00" and scene.names[0] == "images_8/frame_00001.png"
    assert torch.allclose(scene.intrinsics.float(), proc.intrinsics, atol=1e-5)
    with pytest.raises(SceneError, match="images_4"):
        read_dl3dv(folder, image_dir="images_4")


def test_dl3dv_colmap_world_is_a_rigid_change_invisible_after_normalisation(tmp_path, proc):
    folder = write_dl3dv_raw(proc, tmp_path / "s")
    plain, colmap = read_dl3dv(folder), read_dl3dv(folder, colmap_world=True)
    assert not torch.allclose(plain.c2w, colmap.c2w)
    a = normalize_poses(plain.c2w[:6], plain.c2w[6:])
    b = normalize_poses(colmap.c2w[:6], colmap.c2w[6:])
    assert torch.allclose(a[0], b[0], atol=1e-9) and torch.allclose(a[1], b[1], atol=1e-9)


def test_opencv_cameras_reader(tmp_path, proc):
    frames = []
    for i in range(12):
        name = f"images_undistort/frame{i * 10}.jpg"
        _save_png(tmp_path / "tmp.png", proc.images[i])
        (tmp_path / "images_undistort").mkdir(exist_ok=True)
        Image.open(tmp_path / "tmp.png").save(tmp_path / name, quality=95)
        fx, fy, cx, cy = (2 * v for v in proc.intrinsics[i].tolist())  # given for a 2x larger image
        frames.append({"file_path": name, "w2c": invert_rigid(proc.c2w[i].double()).tolist(),
                       "h": 72, "w": 128, "fx": fx, "fy": fy, "cx": cx, "cy": cy})
    (tmp_path / "opencv_cameras.json").write_text(json.dumps(
        {"scene_name": "desk", "frames": frames, "fold_8_kmeans_4_input": [5, 1, 3, 2]}))
    assert detect_layout(tmp_path) == "opencv_cameras"
    scene = open_scene(tmp_path)
    assert scene.scene_id == "desk" and scene.names[1] == "images_undistort/frame10.jpg"
    assert torch.allclose(scene.intrinsics.float(), proc.intrinsics, atol=1e-5)
    assert torch.allclose(scene.c2w.float(), proc.c2w, atol=1e-5)
    assert scene.extras["eval_inputs"] == {"8/4": [5, 1, 3, 2]}
    images, _ = scene.load_views([4])
    assert (images - proc.images[[4]]).abs().mean() < 0.03  # JPEG


def _colmap_quat(w2c):
    from model.rotations import matrix_to_quat

    return matrix_to_quat(w2c[:3, :3]).tolist()


@pytest.mark.parametrize("fmt", ["txt", "bin"])
def test_colmap_reader(tmp_path, proc, fmt):
    pycolmap = pytest.importorskip("pycolmap")
    for i in range(12):
        _save_png(tmp_path / "images" / f"f{i}.png", proc.images[i])
    fx, fy, cx, cy = proc.intrinsics[0].tolist()
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"1 PINHOLE 64 36 {fx!r} {fy!r} {cx!r} {cy!r}\n")
    lines = []
    for i in reversed(range(12)):  # image ids in reverse order; the reader sorts by name
        w2c = invert_rigid(proc.c2w[i].double())
        q, t = _colmap_quat(w2c), w2c[:3, 3].tolist()
        lines += [f"{i + 1} {' '.join(map(repr, q))} {' '.join(map(repr, t))} 1 f{i}.png", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")
    if fmt == "bin":
        rec = pycolmap.Reconstruction(str(model))
        for f in model.iterdir():
            f.unlink()
        rec.write_binary(str(model))
    assert detect_layout(tmp_path) == "colmap"
    scene = read_colmap(tmp_path)
    assert scene.names[:3] == ["images/f0.png", "images/f1.png", "images/f2.png"]
    assert torch.allclose(scene.c2w.float(), proc.c2w, atol=1e-5)
    assert torch.allclose(scene.intrinsics.float(), proc.intrinsics, atol=1e-5)


def test_open_scene_and_find_scenes(tmp_path, proc):
    write_dl3dv_raw(proc, tmp_path / "1K" / "aaa")
    write_dl3dv_raw(proc, tmp_path / "1K" / "bbb")
    (tmp_path / "1K" / "notes").mkdir()
    assert [p.name for p in find_scenes(tmp_path)] == ["aaa", "bbb"]
    assert open_scene(tmp_path / "1K" / "aaa" / "transforms.json").scene_id == "aaa"
    with pytest.raises(SceneError, match="is not a scene"):
        open_scene(tmp_path / "1K" / "notes")
    with pytest.raises(SceneError, match="does not exist"):
        open_scene(tmp_path / "missing")


def test_undistortion_matches_pinhole_views(tmp_path):
    w, h = 96, 54
    proc = generate_scene(ProceduralConfig.preset("tiny", seed=3, num_frames=1, width=w, height=h, shadows=False))
    coeffs = torch.tensor([-0.2, 0.02, 0.002, -0.001], dtype=torch.float64)
    fx, fy, cx, cy = proc.intrinsics[0].double().tolist()
    # Any camera's view is sampled from one wide render 3x finer than the frames, along that camera's rays.
    wide = torch.tensor([[fx * 3 * 0.7, fy * 3 * 0.7, cx * 3, cy * 3]])
    fine, _ = render_views(proc.layout, proc.c2w[:1], wide, 3 * w, 3 * h, shadows=False)
    # smoothed over about two frame pixels, so resampling blur is negligible next to misalignment
    fine = F.avg_pool2d(fine.permute(0, 3, 1, 2), 7, stride=1, padding=3, count_include_pad=False).permute(0, 2, 3, 1)
    u, v = torch.meshgrid(torch.arange(w, dtype=torch.float64) + 0.5, torch.arange(h, dtype=torch.float64) + 0.5,
                          indexing="xy")

    def view(rays):  # rays [H, W, 2] in normalised camera coordinates -> [1, H, W, 3]
        xy = torch.stack([rays[..., 0] * wide[0, 0] + wide[0, 2], rays[..., 1] * wide[0, 1] + wide[0, 3]], -1)
        grid = torch.stack([2 * xy[..., 0] / (3 * w) - 1, 2 * xy[..., 1] / (3 * h) - 1], -1)[None].float()
        return F.grid_sample(fine.permute(0, 3, 1, 2), grid, align_corners=False).permute(0, 2, 3, 1)

    def pinhole(k):
        return view(torch.stack([(u - k[2]) / k[0], (v - k[3]) / k[1]], -1))

    distorted = view(undistort_points(torch.stack([(u - cx) / fx, (v - cy) / fy], -1), coeffs))  # what the lens records
    write_dl3dv_scene(proc, tmp_path)
    _save_png(tmp_path / "images_4" / "frame_00001.png", distorted[0])
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta.update(k1=coeffs[0].item(), k2=coeffs[1].item(), p1=coeffs[2].item(), p2=coeffs[3].item())
    (tmp_path / "transforms.json").write_text(json.dumps(meta))

    with pytest.raises(SceneError, match="distortion"):
        read_nerfstudio(tmp_path, distortion="error")
    scene = read_nerfstudio(tmp_path)
    assert scene.distortion is not None
    assert torch.allclose(scene.intrinsics[0, 2:], torch.tensor([cx, cy], dtype=torch.float64))  # principal point kept
    images, cams = scene.load_views([0])
    inner = (slice(None), slice(4, -4), slice(4, -4))
    err_fixed = (images - pinhole(cams.intrinsics[0].double()))[inner].abs().mean()
    err_ignored = (distorted - pinhole(proc.intrinsics[0].double()))[inner].abs().mean()  # pretending a pinhole lens
    reference = pinhole(cams.intrinsics[0].double())
    one_pixel = (reference[:, :, 1:] - reference[:, :, :-1]).abs().mean()  # the error of a 1-pixel misalignment
    assert err_fixed < 0.2 * err_ignored and err_fixed < 0.2 * one_pixel, (err_fixed, err_ignored, one_pixel)


def test_colmap_opencv_model_is_undistorted_or_refused(tmp_path, proc):
    pytest.importorskip("pycolmap")
    _save_png(tmp_path / "images" / "a.png", proc.images[0])
    model = tmp_path / "sparse"
    model.mkdir()
    (model / "cameras.txt").write_text("1 OPENCV 64 36 46 46 32 18 -0.1 0.01 0 0\n"
                                       "2 OPENCV_FISHEYE 64 36 46 46 32 18 0 0 0 0\n")
    (model / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    (model / "points3D.txt").write_text("")
    assert read_colmap(tmp_path).distortion is not None
    with pytest.raises(SceneError, match="distortion"):
        read_colmap(tmp_path, distortion="error")
    (model / "images.txt").write_text("1 1 0 0 0 0 0 0 2 a.png\n\n")
    with pytest.raises(SceneError, match="OPENCV_FISHEYE"):
        read_colmap(tmp_path)
    shutil.rmtree(model)
