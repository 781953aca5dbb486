"""What a forward pass on a capture is fed (infer.py, evaluate.py): the official recipe, point by point.

Oracles: OpenCV's cv2.resize(INTER_LINEAR) and PIL's antialiased BILINEAR for the pixels, the
official intrinsics arithmetic and pose normalisation restated in numpy, scikit-learn KMeans with
numpy's argmin for the input choice, and the frames a camera file lists at given positions.
"""

import csv
import json
import logging
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from data.config import DataConfig, ResolutionConfig, ViewConfig
from data.open_scene import open_scene
from data.pipeline import capture_sample
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from data.resize import inference_size
from data.view_sampling import kmeans_inputs, read_input_index
from inference import evaluate, infer
from inference.reconstruct import Options, scene_sample
from model.pretrained import LoadedModel, official_recipe, training_recipe
from tests.support import write_checkpoint

FRAMES, WIDTH, HEIGHT = 40, 320, 180
STORED = [3, 5, 9, 12, 18, 21, 30, 37]


@pytest.fixture(scope="module")
def generated():
    return generate_scene(ProceduralConfig(num_frames=FRAMES, width=WIDTH, height=HEIGHT, seed=11))


@pytest.fixture(scope="module")
def official_scene(generated, tmp_path_factory):
    """The scene in the authors' processed format, with a stored 8-input list."""
    root = tmp_path_factory.mktemp("official") / "capture"
    (root / "images_undistort").mkdir(parents=True)
    pixels = np.rint(generated.images.numpy() * 255).astype(np.uint8)
    frames = []
    for i in range(FRAMES):
        Image.fromarray(pixels[i]).save(root / "images_undistort" / f"frame{i}.png")
        fx, fy, cx, cy = generated.intrinsics[i].tolist()
        frames.append({"file_path": f"images_undistort/frame{i}.png", "w2c": np.linalg.inv(generated.c2w[i].double().numpy()).tolist(),
                       "h": HEIGHT, "w": WIDTH, "fx": fx, "fy": fy, "cx": cx, "cy": cy})
    (root / "opencv_cameras.json").write_text(json.dumps({"scene_name": "capture", "frames": frames,
                                                          "fold_8_kmeans_8_input": STORED}))
    return root


def official_loaded(short_side: int) -> LoadedModel:
    resolution, views, preprocessing = official_recipe()
    resolution = ResolutionConfig(mode="full", size=short_side, resample=resolution.resample)
    return LoadedModel(None, "official", Path("checkpoint_000010000.pt"), resolution, views, preprocessing)


def official_normalisation(c2w: np.ndarray, scene_scale: float) -> np.ndarray:
    """The authors' pose normalisation (their data/dataset.py), restated: c2w [V, 4, 4] -> normalised."""
    forward = c2w[:, :3, 2].mean(0)
    forward /= np.linalg.norm(forward)
    down = c2w[:, :3, 1].mean(0)
    down -= down @ forward * forward
    down /= np.linalg.norm(down)
    ref = np.eye(4)
    ref[:3, :4] = np.stack([np.cross(down, forward), down, forward, c2w[:, :3, 3].mean(0)], 1)
    out = np.linalg.inv(ref) @ c2w
    out[:, :3, 3] /= scene_scale * np.abs(out[:, :3, 3]).max()
    return out


def test_official_recipe_feeds_whole_frames_resized_like_opencv(official_scene, generated):
    scene = open_scene(official_scene)
    selection, sample = scene_sample(scene, official_loaded(144), Options(num_views=8, holdout=True))
    assert selection.inputs == STORED and selection.source == "stored"
    assert selection.targets == list(range(0, FRAMES, 8))
    assert sample.input_images.shape == (8, 144, 256, 3)  # 320x180 resized whole: short side 144, no crop
    meta = json.loads((official_scene / "opencv_cameras.json").read_text())
    for frames, images, cameras in ((selection.inputs, sample.input_images, sample.input_cameras),
                                    (selection.targets, sample.target_images, sample.target_cameras)):
        pixels = [np.asarray(Image.open(official_scene / meta["frames"][i]["file_path"])) for i in frames]
        expected = torch.from_numpy(np.stack([cv2.resize(p, (256, 144), interpolation=cv2.INTER_LINEAR)
                                              for p in pixels])).float() / 255
        diff = (images - expected).abs()
        assert float(diff.max()) <= 1 / 255 + 1e-6 and float(diff.mean()) < 0.5 / 255
        k = np.array([[f[key] for key in ("fx", "fy", "cx", "cy")] for f in (meta["frames"][i] for i in frames)])
        k *= [256 / WIDTH, 144 / HEIGHT, 256 / WIDTH, 144 / HEIGHT]  # each axis scaled on its own
        np.testing.assert_allclose(cameras.intrinsics.numpy(), k, rtol=1e-6)
    c2w = np.linalg.inv(np.array([f["w2c"] for f in meta["frames"]]))
    normalised = official_normalisation(c2w[selection.inputs], 1.35)
    np.testing.assert_allclose(sample.input_cameras.c2w.numpy(), normalised, atol=1e-6)


def test_antialiased_filter_matches_pil_bilinear(official_scene):
    """The project's own training filter: PIL's BILINEAR (a triangle widened by the downscale)."""
    scene = open_scene(official_scene)
    config = DataConfig(views=ViewConfig(num_inputs=4), resolution=ResolutionConfig(mode="full", size=64))
    selection, sample = capture_sample(scene, config, holdout=False, size=(64, 112))
    pixels = Image.open(official_scene / scene.names[selection.inputs[0]])
    expected = np.asarray(pixels.resize((112, 64), Image.BILINEAR), dtype=np.float32) / 255
    diff = np.abs(sample.input_images[0].numpy() - expected)
    assert diff.max() <= 1 / 255 + 1e-6


def test_default_size_follows_the_capture_when_training_aspect_is_far(official_scene, caplog):
    # Within 2%: the training rule as is (the official 960x540 -> 960x544 changes the aspect by 0.74%).
    assert inference_size(1080, 1920, ResolutionConfig(mode="full", size=540)) == ((544, 960), False)
    assert inference_size(260, 256, ResolutionConfig(mode="square", size=256)) == ((256, 256), False)
    # A square-trained model and 16:9 frames: about as many pixels at the frames' aspect, not stretched.
    for (h, w), side in (((1080, 1920), 256), ((1920, 1080), 256), ((180, 320), 128), ((480, 640), 512)):
        (nh, nw), followed = inference_size(h, w, ResolutionConfig(mode="square", size=side))
        assert followed and nh % 16 == 0 and nw % 16 == 0
        assert abs(nh * nw / side**2 - 1) < 0.1 and abs((nw / nh) / (w / h) - 1) < 0.06
    scene = open_scene(official_scene)
    config = DataConfig(views=ViewConfig(num_inputs=4), resolution=ResolutionConfig(mode="square", size=128))
    with caplog.at_level(logging.INFO, logger="data"):
        _, sample = capture_sample(scene, config, holdout=True)
    assert sample.input_images.shape[1:3] == (96, 176) and "instead of stretching" in caplog.text
    k = sample.input_cameras.intrinsics[0] / scene.intrinsics[sample.input_indices[0]].float()
    torch.testing.assert_close(k, torch.tensor([176 / WIDTH, 96 / HEIGHT] * 2))  # whole frame: no crop offset


def test_kmeans_ties_go_to_the_lower_frame_as_numpy_argmin_does():
    """Pairs of cameras symmetric about their cluster centre tie exactly; a 1e-15 change of a pose
    (another way of inverting it) must not change which frame is chosen."""
    from sklearn.cluster import KMeans

    c2w = np.tile(np.eye(4), (48, 1, 1))
    c2w[:, 0, 3] = np.repeat(np.arange(24) * 10.0, 2) + np.tile([-0.5, 0.5], 24)
    candidates = [i for i in range(48) if i % 8]
    features = np.concatenate([c2w[candidates, :3, 3], c2w[candidates, :3, 2]], 1)
    centers = KMeans(n_clusters=12, random_state=0, n_init="auto").fit(features).cluster_centers_
    official = sorted(candidates[int(np.argmin(np.linalg.norm(features - c, axis=1)))] for c in centers)
    assert kmeans_inputs(c2w, 12, every=8) == official
    nudged = c2w.copy()
    nudged[1::2, 0, 3] -= 4e-15  # the second of each pair now a hair closer to its centre
    assert kmeans_inputs(nudged, 12, every=8) == official


@pytest.fixture(scope="module")
def shuffled_dl3dv(tmp_path_factory):
    """Two DL3DV-style scenes whose transforms.json lists frames out of order."""
    root = tmp_path_factory.mktemp("bench")
    for seed in (3, 4):
        out = write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=17, width=64, height=32, seed=seed)),
                                root / f"hash{seed}")
        meta = json.loads((out / "transforms.json").read_text())
        random.Random(seed).shuffle(meta["frames"])
        (out / "transforms.json").write_text(json.dumps(meta))
    return root


def test_authors_input_index_counts_frames_in_file_order(shuffled_dl3dv, tmp_path, capsys):
    meta = json.loads((shuffled_dl3dv / "hash3" / "transforms.json").read_text())
    files = [Path(f["file_path"]).name for f in meta["frames"]]
    assert files != sorted(files)
    held_out = {f"frame_{i + 1:05d}.png" for i in range(0, 17, 8)}  # frames 0, 8, 16 in video order
    positions = [p for p, name in enumerate(files) if name not in held_out][3:7]
    names = [files[p] for p in positions]
    index = tmp_path / "dl3dv_fold_8_kmeans_input_idx.json"
    index.write_text(json.dumps([{"scene_name": "hash3", "fold_8_kmeans_4_input": positions,
                                  "fold_8_kmeans_2_input": positions[:2]}]))
    assert read_input_index(index) == {"hash3": {"8/4": positions, "8/2": positions[:2]}}
    ckpt = write_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "one"
    code = infer.main([str(a) for a in ("--views", shuffled_dl3dv / "hash3", "--checkpoint", ckpt, "--num-views", 4,
                                        "--resolution", "64x32", "--eval", "--input-index", index, "--out", out,
                                        "--no-lpips")])
    assert code == 0, capsys.readouterr().err
    cameras = json.loads((out / "cameras.json").read_text())
    assert sorted(Path(c["frame"]).name for c in cameras["inputs"]) == sorted(names)
    assert json.loads((out / "metrics.json").read_text())["input_frames"] == "stored"

    args = ["--scenes", shuffled_dl3dv, "--checkpoint", ckpt, "--num-views", 4, "--resolution", "64x32", "--no-lpips"]
    assert evaluate.main([str(a) for a in args + ["--input-index", index, "--out", tmp_path / "table"]]) == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "table" / "per_scene.csv").open()))
    assert [(r["scene"], r["inputs"], r["targets"], r["input_frames"]) for r in rows] == [("hash3", "4", "3", "stored")]
    assert '"keep_ratio": null' in (tmp_path / "table" / "summary.md").read_text()  # the record used, echoed
    assert "hash4" in err and "not in the input index" in err
    assert evaluate.main([str(a) for a in args + ["--input-index", tmp_path / "nope.json", "--out", tmp_path / "x"]]) == 2
    assert "--input-index" in capsys.readouterr().err


def test_checkpoints_record_their_preprocessing_and_options_override_it(shuffled_dl3dv, tmp_path, capsys):
    resolution, views, recorded = training_recipe(
        {"data": {"resolution": {"mode": "full", "size": 540, "resample": "bilinear"}, "scene_scale": 1.2,
                  "views": {"num_inputs": 16}}, "prune": {"enabled": True, "prune_ratio": 0.5, "random_ratio": 0.2}},
        Path("run"))
    assert (resolution.resample, views) == ("bilinear", 16)
    assert (recorded.resample, recorded.scene_scale, recorded.keep_ratio, recorded.random_ratio) == ("bilinear", 1.2, 0.5, 0.2)
    _, _, older = training_recipe({"data": {"resolution": {"mode": "square", "size": 256}}}, Path("run"))
    assert (older.resample, older.scene_scale, older.keep_ratio, older.min_opacity) == ("antialiased", 1.0, None, 0.001)
    _, views, official = official_recipe()
    assert views == 32 and official.as_dict() == {"resample": "bilinear", "scene_scale": 1.35, "keep_ratio": 0.4,
                                                  "random_ratio": 0.1, "prune_seed": 0, "min_opacity": None}

    ckpt = write_checkpoint(tmp_path / "tiny.safetensors")
    base = ["--views", shuffled_dl3dv / "hash4", "--checkpoint", ckpt, "--num-views", 4, "--resolution", "64x32",
            "--no-lpips", "--min-opacity", 0]
    runs = {}
    for scale in (1.0, 2.0):
        out = tmp_path / f"scale{scale}"
        assert infer.main([str(a) for a in base + ["--scene-scale", scale, "--keep-ratio", 0.5, "--random-ratio", 0.2,
                                                   "--prune-seed", 3, "--resample", "bilinear", "--out", out]]) == 0
        runs[scale] = (json.loads((out / "metrics.json").read_text()), json.loads((out / "cameras.json").read_text()))
    metrics, cameras = runs[2.0]
    assert metrics["preprocessing"] == {"resample": "bilinear", "scene_scale": 2.0, "keep_ratio": 0.5,
                                        "random_ratio": 0.2, "prune_seed": 3, "min_opacity": 0}
    n = metrics["gaussians_predicted"]
    assert metrics["gaussians_kept"] == int(n * (0.5 - 0.5 * 0.2)) + int(n * 0.5 * 0.2)
    # poses are scaled by 1 / (scene_scale * extent): twice the scene scale, half the normalised world
    k1, k2 = (np.linalg.norm(np.array(runs[s][1]["world_to_normalized"])[:3, 0]) for s in (1.0, 2.0))
    assert k2 / k1 == pytest.approx(0.5, rel=1e-12)
    capsys.readouterr()
    assert infer.main([str(a) for a in base + ["--random-ratio", 2, "--out", tmp_path / "bad"]]) == 2
    assert "--random-ratio" in capsys.readouterr().err
