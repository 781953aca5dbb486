import json

import pytest
import torch

from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from model.cameras import Cameras
from model.ply import load_ply, save_ply
from refine.__main__ import main
from refine.init import from_depth


@pytest.fixture(scope="module")
def scene_and_ply(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine_cli")
    scene = generate_scene(ProceduralConfig.preset("tiny", num_frames=10, width=32, height=24, seed=2))
    write_dl3dv_scene(scene, root / "scene", image_dir="images_4")
    cams = Cameras(scene.intrinsics, scene.c2w, 32, 24)
    gaussians = from_depth(scene.images[[1, 5]], scene.depth[[1, 5]], cams[[1, 5]], stride=2)
    ply = save_ply(gaussians, root / "input.ply")
    return root, ply, gaussians


def test_cli_writes_refined_ply_and_metrics(scene_and_ply):
    root, ply, gaussians = scene_and_ply
    before = ply.read_bytes()
    out = root / "out"
    assert main(["--ply", str(ply), "--views", str(root / "scene"), "--out", str(out), "--steps", "4",
                 "--backend", "cpu", "--device", "cpu", "--quiet", "--set", "feature_lr=0.01"]) == 0
    refined = load_ply(out / "refined.ply")
    assert refined.count == gaussians.count  # the short preset does not densify
    assert not torch.equal(refined.sh, gaussians.sh)  # it did optimise
    report = json.loads((out / "metrics.json").read_text())
    assert report["holdout"] == [0, 8]
    assert report["before"]["step"] == 0 and report["after"]["step"] == 4
    assert set(report["after"]) >= {"psnr", "ssim"}
    assert report["config"]["feature_lr"] == 0.01 and report["config"]["steps"] == 4
    assert ply.read_bytes() == before


def test_cli_refuses_to_overwrite(scene_and_ply):
    root, ply, _ = scene_and_ply
    out = root / "occupied"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["--ply", str(ply), "--views", str(root / "scene"), "--out", str(out), "--steps", "1",
            "--backend", "cpu", "--device", "cpu", "--quiet"]
    with pytest.raises(SystemExit, match="not empty"):
        main(args)
    assert not (out / "refined.ply").exists()
    assert main(args + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "refined.ply").is_file()
    with pytest.raises(SystemExit, match="overwrite the input"):
        main(["--ply", str(out / "refined.ply"), "--views", str(root / "scene"), "--out", str(out),
              "--steps", "1", "--backend", "cpu", "--device", "cpu", "--quiet", "--overwrite"])
