"""python -m refine end to end on procedural scenes: from an infer.py output, from random points and from
real structure-from-motion points, on infer.py's views; and every bad input."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import infer
from data.open_scene import open_scene
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from inference.evaluation import ViewScores
from model.cameras import Cameras
from model.ply import load_ply
from model.render import rasterize
from infer import EXIT_BAD_INPUT
from refine.__main__ import main
from tests.test_infer import write_checkpoint

QUICK = ["--backend", "cpu", "--device", "cpu", "--quiet", "--no-lpips"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("refine_cli") / "room"
    write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=20, width=96, height=48, seed=5)), out)
    return out


@pytest.fixture(scope="module")
def inferred(scene_dir, tmp_path_factory):
    """An infer.py output folder: 4 KMeans inputs, frames 0, 8, 16 held out, at 64x32."""
    root = tmp_path_factory.mktemp("inferred")
    checkpoint = write_checkpoint(root / "tiny.safetensors")
    out = root / "out"
    assert infer.main(["--views", str(scene_dir), "--checkpoint", str(checkpoint), "--num-views", "4",
                       "--resolution", "64x32", "--eval", "--no-lpips", "--out", str(out)]) == 0
    return out


def render_world(ply: Path, scene_dir: Path, frames: list[str], width: int, height: int) -> torch.Tensor:
    """The PLY rendered in the scene's own world frame at `frames`, independently of the command's frame."""
    scene = open_scene(scene_dir)
    idx = [scene.names.index(f) for f in frames]
    cams = Cameras(scene.intrinsics[idx].float() * torch.tensor([width / scene.width, height / scene.height] * 2),
                   scene.c2w[idx].float(), width, height)
    g = load_ply(ply)
    colors, _, _ = rasterize(g.means, g.rotations, g.scales, g.opacities, g.sh, cams.viewmats, cams.Ks, width,
                             height, sh_degree=g.sh_degree, backgrounds=torch.ones(len(idx), 3), backend="cpu")
    return colors


def held_out_psnr(report: dict, colors: torch.Tensor, scene_dir: Path) -> float:
    scene = open_scene(scene_dir)
    p = report["protocol"]
    idx = [scene.names.index(f) for f in p["targets"]]
    images, _ = scene.load_views(idx, size=(p["height"], p["width"]))
    scores = ViewScores(with_lpips=False)
    for pred, target in zip(colors, images):
        scores.add(pred, target)
    return scores.mean()["psnr"]


def test_from_an_infer_output_folder_uses_its_views(inferred, scene_dir, tmp_path, capsys):
    before = (inferred / "gaussians.ply").read_bytes()
    out = tmp_path / "refined"
    assert main(["--views", str(scene_dir), "--ply", str(inferred), "--out", str(out), "--steps", "20", *QUICK]) == 0
    report = json.loads((out / "metrics.json").read_text())
    recorded = json.loads((inferred / "metrics.json").read_text())
    cameras = json.loads((inferred / "cameras.json").read_text())
    p = report["protocol"]
    assert p["inputs"] == [c["frame"] for c in cameras["inputs"]] and (p["width"], p["height"]) == (64, 32)
    assert p["targets"] == [v["frame"] for v in recorded["per_view"]] == ["images_4/frame_00001.png",
                                                                          "images_4/frame_00009.png",
                                                                          "images_4/frame_00017.png"]
    # The start scored like infer.py scores its prediction: the same numbers.
    assert report["before"]["psnr"] == pytest.approx(recorded["mean"]["psnr"], abs=0.02)
    assert report["before"]["ssim"] == pytest.approx(recorded["mean"]["ssim"], abs=1e-3)
    assert report["after"]["psnr"] > report["before"]["psnr"]
    assert report["gaussians"] == {"before": recorded["gaussians_kept"], "after": recorded["gaussians_kept"]}
    assert report["config"]["steps"] == 20 and not report["config"]["densify"]  # the short preset
    assert (inferred / "gaussians.ply").read_bytes() == before
    assert "held-out after: PSNR" in capsys.readouterr().out


@pytest.mark.parametrize("init", ["random", "sfm"])
def test_classic_3dgs_from_scratch(init, scene_dir, tmp_path, capsys):
    views = scene_dir
    if init == "sfm":  # a capture posed by real structure from motion: a COLMAP scene, images/ + sparse/0
        pycolmap = pytest.importorskip("pycolmap")
        views = tmp_path / "captured"
        generated = generate_scene(ProceduralConfig(num_frames=24, width=256, height=128, seed=3))
        (views / "images").mkdir(parents=True)
        for i, image in enumerate(generated.images):
            Image.fromarray((image * 255).round().byte().numpy()).save(views / "images" / f"frame_{i + 1:05d}.png")
        work = tmp_path / "sfm"
        work.mkdir()
        pycolmap.set_random_seed(0)  # one thread and fixed seeds: the same model every run
        extraction, matching = pycolmap.FeatureExtractionOptions(), pycolmap.FeatureMatchingOptions()
        mapping, verification = pycolmap.IncrementalPipelineOptions(), pycolmap.TwoViewGeometryOptions()
        extraction.num_threads = matching.num_threads = mapping.num_threads = 1
        mapping.random_seed = verification.ransac.random_seed = 0
        pycolmap.extract_features(work / "db.db", views / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                                  extraction_options=extraction)
        pycolmap.match_exhaustive(work / "db.db", matching_options=matching, verification_options=verification)
        models = pycolmap.incremental_mapping(work / "db.db", views / "images", work, options=mapping)
        largest = max(models.values(), key=lambda r: r.num_reg_images())
        assert largest.num_reg_images() >= 16 and largest.num_points3D() >= 50
        (views / "sparse" / "0").mkdir(parents=True)
        largest.write(views / "sparse" / "0")
    out = tmp_path / "out"
    args = ["--views", str(views), "--init", init, "--out", str(out), "--steps", "300", "--num-views", "8",
            "--resolution", "64x32" if init == "random" else "128x64", "--init-points", "3000", *QUICK]
    if init == "sfm":
        args.remove("--init-points")
        args.remove("3000")
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())
    p = report["protocol"]
    assert p["num_inputs"] == 8 and p["num_targets"] == 3
    assert report["config"]["densify"] and report["config"]["steps"] == 300  # graphdeco's schedule, scaled
    assert [e["step"] for e in report["events"] if e["kind"] == "densify"] == [100]
    assert report["gaussians"]["before"] == (3000 if init == "random" else largest.num_points3D())
    ply = out / "refined.ply"
    assert load_ply(ply).count == report["gaussians"]["after"] and load_ply(ply).sh_degree == 3
    # refined.ply lies in the scene's world frame: rendered there, it scores what the command reported.
    colors = render_world(ply, views, p["targets"], p["width"], p["height"])
    assert held_out_psnr(report, colors, views) == pytest.approx(report["after"]["psnr"], abs=0.05)
    assert report["after"]["psnr"] > 14.0


def test_bad_inputs_give_one_clear_line(scene_dir, inferred, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    cases = [
        (["--views", str(scene_dir), "--init", "sfm", "--out", str(tmp_path / "a")], "no COLMAP model"),
        (["--views", str(scene_dir), "--init", "random", "--out", str(occupied)], "not empty"),
        (["--views", str(scene_dir), "--ply", str(tmp_path / "none.ply"), "--out", str(tmp_path / "b")], "no PLY file"),
        (["--views", str(tmp_path / "nowhere"), "--init", "random", "--out", str(tmp_path / "c")], "does not exist"),
        (["--views", str(scene_dir), "--init", "random", "--num-views", "1", "--out", str(tmp_path / "d")],
         "at least 2"),
        (["--views", str(scene_dir), "--init", "random", "--resolution", "50x30", "--out", str(tmp_path / "e")],
         "multiples of 16"),
        (["--views", str(scene_dir), "--ply", str(inferred), "--init-points", "10", "--out", str(tmp_path / "f")],
         "--init-points needs --init random"),
        (["--views", str(scene_dir), "--init", "random", "--set", "densify_intervall=3", "--out", str(tmp_path / "g")],
         "unknown config key"),
    ]
    for args, fragment in cases:
        assert main(args + QUICK) == EXIT_BAD_INPUT, args
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and fragment in lines[0], (args, err)
        assert "Traceback" not in err
    assert (occupied / "notes.txt").read_text() == "keep me" and not (occupied / "refined.ply").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse: exactly one way to start
        main(["--views", str(scene_dir), "--init", "random", "--ply", str(inferred), "--out", str(tmp_path / "h")])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_never_writes_over_its_input(inferred, scene_dir, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    ply = out / "refined.ply"
    ply.write_bytes((inferred / "gaussians.ply").read_bytes())
    before = ply.read_bytes()
    assert main(["--views", str(scene_dir), "--ply", str(ply), "--out", str(out), "--overwrite", "--steps", "1",
                 *QUICK]) == EXIT_BAD_INPUT
    assert ply.read_bytes() == before
