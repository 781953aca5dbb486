"""Photos or a video without poses -> frames -> pycolmap SfM -> a COLMAP scene -> infer.py.

Oracles: the procedural generator's true cameras (recovered camera centres aligned to them by an
Umeyama similarity written here), PSNR with the true poses through the same command, numpy
rotations for EXIF orientation, and frames blurred on purpose for the sharpness pick.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from bench.bench_sfm import encode, pose_errors, umeyama
from data.capture import CaptureConfig, capture_scene
from data.capture.frames import extract_frames
from data.capture.photos import Photos
from data.capture.selection import pick_frames, sharpness
from data.capture.sfm import plausible_camera
from data.capture.video import Video
from data.colmap import read_colmap
from data.errors import SceneError
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from inference import infer
from inference.cli import EXIT_BAD_INPUT

pycolmap = pytest.importorskip("pycolmap")

MAX_ROTATION_DEG = 0.5
MAX_CENTRE_ERROR = 0.01  # of the extent of the true camera centres
MIN_REGISTERED = 0.9
MAX_PSNR_DROP = 1.0


def test_pose_oracle_recovers_a_known_similarity():
    """The alignment the pose checks rely on, on cameras moved by a known similarity."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    c2w = np.tile(np.eye(4), (20, 1, 1))
    rots = np.linalg.qr(rng.normal(size=(20, 3, 3)))[0]
    c2w[:, :3, :3] = rots * np.sign(np.linalg.det(rots))[:, None, None]  # proper rotations
    c2w[:, :3, 3] = rng.normal(size=(20, 3))
    s, r, t = umeyama(c2w[:, :3, 3], 2.5 * c2w[:, :3, 3] @ rot.T + [1.0, -2.0, 0.5])
    assert abs(s - 2.5) < 1e-9 and np.allclose(r, rot) and np.allclose(t, [1.0, -2.0, 0.5])
    moved = c2w.copy()
    moved[:, :3, :3] = rot @ c2w[:, :3, :3]
    moved[:, :3, 3] = 2.5 * c2w[:, :3, 3] @ rot.T + [1.0, -2.0, 0.5]
    assert np.allclose(pose_errors(c2w, moved), 0, atol=1e-6)
    a = np.radians(1.0)
    turn = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])  # 1 degree pitch
    twice, turned = np.concatenate([c2w, c2w]), np.concatenate([moved, moved])
    turned[:20, :3, :3] = turned[:20, :3, :3] @ turn  # each camera once pitched up, once down: no common offset
    turned[20:, :3, :3] = turned[20:, :3, :3] @ turn.T
    assert np.allclose(pose_errors(twice, turned), (1.0, 0), atol=1e-6)
    moved[::2, :3, 3] += [0.3, 0.0, 0.0]  # half the cameras off by 0.3 in a cloud about 8 wide
    assert 0.005 < pose_errors(c2w, moved)[1] < 0.05


@pytest.fixture(scope="module")
def room():
    return generate_scene(ProceduralConfig(num_frames=48, width=256, height=144, seed=1, path="walk"))


def pixels(images) -> np.ndarray:
    return np.rint(images.clamp(0, 1).numpy() * 255).astype(np.uint8)  # [V, H, W, 3]


def run(args, capsys):
    code = infer.main([str(a) for a in args])
    return code, capsys.readouterr()


def check_against_truth(room, out, tmp_path, capsys, frame_index):
    """Pose accuracy of the capture in `out`, then held-out PSNR with recovered vs true poses."""
    scene = read_colmap(out)
    indices = [frame_index(name.split("/")[-1]) for name in scene.names]
    assert len(indices) >= MIN_REGISTERED * room.num_views
    rotation, centre = pose_errors(scene.c2w.numpy(), room.c2w.double().numpy()[indices])
    assert rotation < MAX_ROTATION_DEG and centre < MAX_CENTRE_ERROR, (rotation, centre)

    truth = write_dl3dv_scene(room, tmp_path / "truth")
    code, cap = run(["--views", truth, "--eval", "--no-lpips", "--out", tmp_path / "with_truth"], capsys)
    assert code == 0, cap.err
    true_psnr = json.loads((tmp_path / "with_truth" / "metrics.json").read_text())["mean"]["psnr"]
    recovered_psnr = json.loads((out / "metrics.json").read_text())["mean"]["psnr"]
    assert recovered_psnr > true_psnr - MAX_PSNR_DROP, (recovered_psnr, true_psnr)
    return scene


@pytest.mark.slow
def test_photos_to_reconstruction(room, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(pixels(room.images)):
        Image.fromarray(image).save(photos / f"IMG_{i + 1}.png")  # unpadded: natural order, not text order
    out = tmp_path / "out"
    code, cap = run(["--views", photos, "--eval", "--no-lpips", "--out", out], capsys)
    assert code == 0, cap.err
    assert sorted(p.name for p in photos.iterdir()) == sorted(f"IMG_{i + 1}.png" for i in range(48))  # untouched
    assert (out / "sparse" / "0" / "cameras.bin").is_file() and (out / "capture.log").stat().st_size > 0
    report = json.loads((out / "capture.json").read_text())
    assert report["kind"] == "photos" and len(report["frames"]) == 48
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert report["points"] == model.num_points3D() > 0
    # SfM may also find a stray few-frame model (how often depends on the CPU's float rounding); it is never kept
    assert all(k < model.num_reg_images() for k in report["implausible_models"]), report
    assert math.isclose(report["reprojection_error"], model.compute_mean_reprojection_error())
    seconds = next(line for line in cap.out.splitlines() if line.startswith("seconds:"))  # the summary's
    assert all(f" {step} " in seconds for step in ("frames", "features", "matching", "mapping", "predict")), seconds
    scene = check_against_truth(room, out, tmp_path, capsys, lambda name: int(name[4:-4]) - 1)
    assert scene.distortion is None or scene.distortion.abs().max() < 0.05

    # the output folder is now a COLMAP scene: the same poses, without computing them again
    code, cap = run(["--views", out, "--no-lpips", "--out", tmp_path / "again"], capsys)
    assert code == 0, cap.err
    assert "features" not in cap.out and not (tmp_path / "again" / "capture.json").exists()
    before = json.loads((out / "cameras.json").read_text())["inputs"]
    after = {c["frame"]: c["c2w"] for c in json.loads((tmp_path / "again" / "cameras.json").read_text())["inputs"]}
    assert all(np.allclose(after[c["frame"]], c["c2w"]) for c in before if c["frame"] in after)


@pytest.mark.slow
def test_video_to_reconstruction(room, tmp_path, capsys):
    clip = encode(pixels(room.images), tmp_path / "clip.mp4", fps=24, crf=12)  # near-lossless
    out = tmp_path / "out"
    code, cap = run(["--views", clip, "--eval", "--no-lpips", "--out", out], capsys)
    assert code == 0, cap.err
    report = json.loads((out / "capture.json").read_text())
    assert report["kind"] == "video" and report["source_frames"] == 48 and report["loop_pairs"] > 0
    assert [f["from"] for f in report["frames"]] == [f"frame {i}" for i in range(48)]
    scene = check_against_truth(room, out, tmp_path, capsys, lambda name: int(name[6:-4]) - 1)
    assert len(set(scene.intrinsics[:, 0].tolist())) == 1  # one shared camera


def model_contents(folder) -> tuple[dict, list, np.ndarray]:
    """Poses by frame name, camera parameters and sorted 3D points of a COLMAP model folder."""
    model = pycolmap.Reconstruction(str(folder))
    poses = {model.images[i].name: model.images[i].cam_from_world().matrix() for i in model.reg_image_ids()}
    cameras = [list(c.params) for c in model.cameras.values()]
    return poses, cameras, np.array(sorted(tuple(p.xyz) for p in model.points3D.values()))


@pytest.mark.slow
def test_same_photos_give_the_same_poses(tmp_path):
    """Two captures of the same photos, extracting and matching on one thread and on two: the same models,
    bit for bit (feature extraction numbers frames in the order its threads finish them, and the mapper's
    choices follow those numbers and its own thread count)."""
    room = generate_scene(ProceduralConfig(num_frames=16, width=256, height=144, seed=1, path="walk"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(pixels(room.images)):
        Image.fromarray(image).save(photos / f"{i:02d}.png")
    runs = []
    for threads in (1, 2):
        capture = capture_scene(photos, tmp_path / f"threads{threads}", CaptureConfig(num_threads=threads))
        models = sorted((tmp_path / f"threads{threads}" / "sparse").iterdir())
        runs.append((capture.poses.models, [model_contents(m) for m in models]))
    (sizes, first), (sizes_again, second) = runs
    assert sizes == sizes_again and sizes[0] >= 14
    for (poses, cameras, points), (poses_again, cameras_again, points_again) in zip(first, second):
        assert poses.keys() == poses_again.keys()
        assert all(np.array_equal(poses[name], poses_again[name]) for name in poses)
        assert cameras == cameras_again and np.array_equal(points, points_again)


def test_implausible_cameras_are_recognised():
    """COLMAP's bounds: focal length within 0.1-10 times the larger image side, distortion within +-1."""
    def model(focal: float, k: float):
        rec = pycolmap.Reconstruction()
        rec.add_camera(pycolmap.Camera(model="SIMPLE_RADIAL", width=256, height=144, params=[focal, 128, 72, k]))
        return rec

    assert plausible_camera(model(185.0, -0.05)) and plausible_camera(model(2000.0, 0.9))
    assert not plausible_camera(model(185.0, 1.02)) and not plausible_camera(model(185.0, -1.5))
    assert not plausible_camera(model(20.0, 0.0)) and not plausible_camera(model(3000.0, 0.0))


def test_sharpest_frame_of_each_stretch_is_kept(tmp_path):
    """A video whose frames are blurred except one per stretch of 4: exactly those are picked."""
    rng = np.random.default_rng(3)
    base = np.kron(rng.integers(0, 256, size=(18, 32, 3)), np.ones((4, 4, 1))).astype(np.float32)  # [72, 128, 3]
    sharp_at = [1, 6, 11, 13, 19]  # one per window of 4 over 20 frames
    frames = []
    for i in range(20):
        shifted = np.roll(base, i, axis=1)
        if i not in sharp_at:  # a horizontal box blur of 7 pixels, like motion blur
            shifted = sum(np.roll(shifted, k, axis=1) for k in range(-3, 4)) / 7
        frames.append(shifted.round().astype(np.uint8))
    clip = encode(np.stack(frames), tmp_path / "blur.mp4", fps=24, crf=12)
    images = tmp_path / "images"
    images.mkdir()
    picked = extract_frames(Video(clip), images, CaptureConfig(max_frames=5))
    assert picked.origins == [f"frame {i}" for i in sharp_at]
    assert sorted(p.name for p in images.iterdir()) == [f"frame_{i + 1:06d}.png" for i in sharp_at]
    decoded = np.asarray(Image.open(images / "frame_000007.png"), dtype=np.float32)
    errors = [np.abs(decoded - f).mean() for f in frames]  # frame 6 decoded, not a neighbour (H.264 4:2:0 loses a little)
    assert decoded.shape == (72, 128, 3) and int(np.argmin(errors)) == 6 and errors[6] < 8


def test_pick_frames_spreads_over_the_sequence():
    assert pick_frames(np.ones(5), 8) == [0, 1, 2, 3, 4]
    scores = np.zeros(100)
    scores[[3, 37, 45, 99]] = 1
    assert pick_frames(scores, 4) == [3, 37, 50, 99]  # window [50, 75) has no sharp frame: its first
    assert sharpness(np.full((8, 8), 7)) == 0 and sharpness(np.eye(8) * 255) > 0


def test_exif_orientation_is_applied(tmp_path):
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, size=(6, 10, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # [48, 80, 3]
    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(image).save(folder / name, quality=98, subsampling=0, exif=exif)
    photos = Photos(folder)
    assert (photos.width, photos.height) == (48, 80)
    upright = photos.frame(0, (48, 80)).astype(np.float32)
    error = {k: np.abs(upright - np.rot90(image, k=k)).mean() for k in (-1, 1)}
    assert error[-1] < 3 and error[1] > 30, error


def test_multi_model_colmap_folder_reads_the_largest(tmp_path, room, capsys, caplog):
    from model.rotations import matrix_to_quat

    (tmp_path / "images").mkdir()
    for i, image in enumerate(pixels(room.images)):
        Image.fromarray(image).save(tmp_path / "images" / f"f{i:02d}.png")
    fx, fy, cx, cy = room.intrinsics[0].tolist()
    for number, count in ((0, 7), (1, 16), (2, 48)):  # sparse/0 is not the largest
        model = tmp_path / "sparse" / str(number)
        model.mkdir(parents=True)
        (model / "cameras.txt").write_text(f"1 PINHOLE 256 144 {fx!r} {fy!r} {cx!r} {cy!r}\n")
        lines = []
        for i in range(count):
            w2c = np.linalg.inv(room.c2w[i].double().numpy())
            q = matrix_to_quat(__import__("torch").from_numpy(w2c[:3, :3])).tolist()
            lines += [f"{i + 1} {' '.join(map(repr, q))} {' '.join(map(repr, w2c[:3, 3].tolist()))} 1 f{i:02d}.png", ""]
        (model / "images.txt").write_text("\n".join(lines) + "\n")
        (model / "points3D.txt").write_text("")
        pycolmap.Reconstruction(str(model)).write_binary(str(model))
    caplog.set_level("INFO")
    assert len(read_colmap(tmp_path)) == 48
    assert "3 models" in caplog.text and "reading model 2, the largest" in caplog.text
    assert len(read_colmap(tmp_path, model=0)) == 7 and len(read_colmap(tmp_path / "sparse", model=1)) == 16
    with pytest.raises(SceneError, match=r"no COLMAP model 5 .* \[0, 1, 2\]"):
        read_colmap(tmp_path, model=5)
    code, cap = run(["--views", tmp_path, "--colmap-model", 1, "--no-lpips", "--out", tmp_path / "o"], capsys)
    assert code == 0, cap.err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["num_inputs"] == 8  # of 16 frames


def bad_captures(tmp_path):
    """(--views, a fragment of the one error line)."""
    rng = np.random.default_rng(1)
    unreadable = tmp_path / "broken.mp4"
    unreadable.write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(4000))
    noise = tmp_path / "no_overlap"  # unrelated pictures: nothing matches between them
    noise.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)).save(noise / f"{i}.png")
    single = tmp_path / "single"
    single.mkdir()
    Image.fromarray(rng.integers(0, 256, size=(36, 64, 3), dtype=np.uint8)).save(single / "only.jpg")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, size in enumerate([(36, 64), (36, 64), (48, 64)]):
        Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(mixed / f"{i}.png")
    return [(unreadable, "not a video ffmpeg can decode"), (noise, "move the camera slower"),
            (single, "at least 2 photos"), (mixed, "different sizes")]


def test_bad_captures_give_one_clear_line_and_leave_nothing(tmp_path, capsys):
    for views, fragment in bad_captures(tmp_path):
        before = sorted(p.name for p in views.iterdir()) if views.is_dir() else views.read_bytes()
        out = tmp_path / "out" / views.name
        code, cap = run(["--views", views, "--no-lpips", "--out", out], capsys)
        assert code == EXIT_BAD_INPUT, (views, cap.err)
        lines = [line for line in cap.err.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and fragment in lines[0], (views, cap.err)
        assert "Traceback" not in cap.err
        assert not out.exists(), list(out.rglob("*"))  # nothing half-written
        assert (sorted(p.name for p in views.iterdir()) if views.is_dir() else views.read_bytes()) == before


def test_output_inside_the_photo_folder_is_refused(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    code, cap = run(["--views", photos, "--out", photos / "result"], capsys)
    assert code == EXIT_BAD_INPUT and "inside the photo folder" in cap.err
    assert not (photos / "result").exists()


def test_capture_settings_are_checked():
    with pytest.raises(ValueError, match="max_frames"):
        CaptureConfig(max_frames=1)
    with pytest.raises(ValueError, match="frame_size"):
        CaptureConfig(frame_size=10)
    assert math.isclose(CaptureConfig().min_registered_share, 0.5)
