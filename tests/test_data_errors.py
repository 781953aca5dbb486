"""Bad input gives one clear SceneError naming the problem (never a traceback from inside PIL/numpy)."""

import json

import numpy as np
import pytest
from PIL import Image

from data.config import DataConfig, ResolutionConfig, ViewConfig
from data.errors import SceneError
from data.open_scene import open_scene
from data.pipeline import SampleBuilder
from data.view_sampling import kmeans_inputs, sample_train_views


def make_scene(folder, num_frames=6, size=(16, 8), poses=None):
    """A minimal nerfstudio folder with PNG frames and OpenGL poses along x."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(num_frames):
        Image.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)).save(folder / "images" / f"f{i:02d}.png")
        pose = poses[i] if poses is not None else [[1, 0, 0, 0.1 * i], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
        frames.append({"file_path": f"images/f{i:02d}.png", "transform_matrix": pose})
    meta = {"w": size[0], "h": size[1], "fl_x": 10.0, "fl_y": 10.0, "cx": size[0] / 2, "cy": size[1] / 2,
            "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def check_clear(excinfo, *fragments):
    """One sentence, mentions the culprit, and no chained low-level exception."""
    err = excinfo.value
    message = str(err)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_transforms_json(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "transforms.json")


def test_invalid_json(tmp_path):
    make_scene(tmp_path)
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "not valid JSON")


def test_missing_image(tmp_path):
    make_scene(tmp_path)
    (tmp_path / "images" / "f03.png").unlink()
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "f03.png", "does not exist")


def test_unreadable_image(tmp_path):
    make_scene(tmp_path)
    (tmp_path / "images" / "f02.png").write_bytes(b"this is not a png")
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "f02.png", "not a readable image")


def test_truncated_image_fails_on_decode(tmp_path):
    make_scene(tmp_path, size=(64, 32))
    path = tmp_path / "images" / "f01.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])  # the header survives, the pixels do not
    scene = open_scene(tmp_path)
    with pytest.raises(SceneError) as e:
        scene.load_views([1])
    check_clear(e, "f01.png", "truncated or corrupt")


def test_mixed_image_sizes(tmp_path):
    make_scene(tmp_path)
    Image.fromarray(np.zeros((9, 16, 3), np.uint8)).save(tmp_path / "images" / "f04.png")
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "different image sizes", "16x8", "16x9", "f04.png")


@pytest.mark.parametrize("pose, fragment", [
    ([[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "NaN or inf"),
    ([[1, 0, 0, float("inf")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "NaN or inf"),
    ([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], "singular or non-rigid"),
    ([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]], "singular or non-rigid"),
    ([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "singular or non-rigid"),  # a reflection
])
def test_bad_poses(tmp_path, pose, fragment):
    poses = [[[1, 0, 0, 0.1 * i], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]] for i in range(6)]
    poses[2] = pose
    make_scene(tmp_path, poses=poses)
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "f02.png", fragment)


def test_intrinsics_for_other_aspect_ratio(tmp_path):
    make_scene(tmp_path)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["h"] = 16
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "different aspect ratio")


def test_too_few_frames_for_views(tmp_path):
    scene = open_scene(make_scene(tmp_path, num_frames=6))
    builder = SampleBuilder(DataConfig(views=ViewConfig(num_inputs=8, num_targets=2)))
    with pytest.raises(SceneError) as e:
        builder(scene, np.random.default_rng(0))
    check_clear(e, "6 frames", "8")
    with pytest.raises(SceneError) as e:
        sample_train_views(6, 4, 7, np.random.default_rng(0))
    check_clear(e, "fewer than the 7")
    with pytest.raises(SceneError) as e:
        kmeans_inputs(scene.c2w, 6, every=8)  # frame 0 is a target: 5 candidates for 6 inputs
    check_clear(e, "only 5 remain")


def test_short_video_uses_whole_video(tmp_path):
    """Documented fallback: fewer frames than the minimum window but enough for the views."""
    sel = sample_train_views(10, 8, 4, np.random.default_rng(0), min_frame_dist=64, max_frame_dist=128)
    assert sorted(sel.inputs) == [0, 1, 2, 3, 5, 6, 7, 9]


def test_portrait_policy(tmp_path):
    scene = open_scene(make_scene(tmp_path, num_frames=6, size=(8, 16)))
    views = ViewConfig(num_inputs=2, num_targets=1, min_frame_dist=3, max_frame_dist=5)
    strict = SampleBuilder(DataConfig(views=views, resolution=ResolutionConfig(mode="full", size=8, portrait="error")))
    with pytest.raises(SceneError) as e:
        strict(scene, np.random.default_rng(0))
    check_clear(e, "portrait")
    kept = SampleBuilder(DataConfig(views=views, resolution=ResolutionConfig(mode="full", size=8, multiple=8)))
    assert kept(scene, np.random.default_rng(0)).input_images.shape == (2, 16, 8, 3)  # transposed size
    square = SampleBuilder(DataConfig(views=views, resolution=ResolutionConfig(mode="square", size=4)))
    assert square(scene, np.random.default_rng(0)).input_images.shape == (2, 4, 4, 3)  # centre of the frame


def test_fisheye_and_extra_coefficients_refused(tmp_path):
    make_scene(tmp_path)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["k3"] = 0.01
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "k3")
    meta.pop("k3")
    meta["camera_model"] = "OPENCV_FISHEYE"
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError) as e:
        open_scene(tmp_path)
    check_clear(e, "OPENCV_FISHEYE")
