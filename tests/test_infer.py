"""End-to-end: infer.py on a small generated scene with a tiny network, and every bad input."""

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import infer
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from model.build import build_model
from model.ply import load_ply
from model.typed_config import to_dict

ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = ["--resolution", "64x32"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "room"
    write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=20, width=96, height=48, seed=5)), out)
    return out


def write_checkpoint(path: Path, preset: str = "tiny") -> Path:
    model = build_model(preset)
    meta = {"model_config": json.dumps(to_dict(model.config)),
            "train_config": json.dumps({"data": {"resolution": {"mode": "full", "size": 32}, "views": {"num_inputs": 4}}})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def run(args, capsys):
    code = infer.main([str(a) for a in args])
    return code, capsys.readouterr()


def test_end_to_end_outputs(scene_dir, checkpoint, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    code, cap = run(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 4, *RESOLUTION, "--eval",
                     "--video", "--refine-steps", 2, "--out", out, "--no-lpips"], capsys)
    assert code == 0, cap.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "trained at" not in caplog.text and "warnings" not in metrics  # inference at the training resolution
    assert metrics["num_inputs"] == 4 and metrics["num_targets"] == 3  # frames 0, 8, 16 of 20 held out
    assert (metrics["width"], metrics["height"]) == (64, 32)
    # PSNR recomputed independently from the saved 8-bit renders equals the reported one
    recomputed = []
    for view in metrics["per_view"]:
        stem = Path(view["frame"]).stem
        pred = iio.imread(out / "renders" / f"{stem}_pred.png").astype(np.float64) / 255
        gt = iio.imread(out / "renders" / f"{stem}_gt.png").astype(np.float64) / 255
        value = 10 * np.log10(1.0 / np.mean((pred - gt) ** 2))
        assert abs(value - view["psnr"]) < 1e-3
        recomputed.append(value)
    assert abs(np.mean(recomputed) - metrics["mean"]["psnr"]) < 1e-3
    gaussians = load_ply(out / "gaussians.ply")
    assert metrics["gaussians_kept"] <= metrics["gaussians_predicted"] == 4 * 64 * 32
    assert gaussians.count == metrics["gaussians_refined"] and metrics["refine"] == {"steps": 2, "robust": False}
    assert gaussians.sh_degree == 3  # padded from the tiny network's own degree for graphdeco-style readers
    assert set(metrics["refined_mean"]) == {"psnr", "ssim", "lpips"} and len(metrics["refined_per_view"]) == 3
    assert all((out / "renders" / f"{Path(v['frame']).stem}_refined.png").is_file() for v in metrics["per_view"])
    cameras = json.loads((out / "cameras.json").read_text())
    assert len(cameras["inputs"]) == 4 and len(cameras["targets"]) == 3
    assert (out / "video.mp4").stat().st_size > 0
    assert "PSNR" in cap.out and f"{gaussians.count:,} after refinement" in cap.out
    # Every second of the run is in a stage: they add up to the total (in the file and the summary line).
    seconds = dict(metrics["seconds"])
    total = seconds.pop("total")
    assert {"load checkpoint", "load views", "predict", "render", "metrics", "refine", "video", "save"} <= set(seconds)
    assert total - 1.0 < sum(seconds.values()) <= total
    line = next(line for line in cap.out.splitlines() if line.startswith("seconds: "))
    stages = [float(part.rsplit(" ", 1)[1]) for part in line[len("seconds: "):].split(" (total")[0].split(", ")]
    assert abs(sum(stages) - float(line.split("(total ")[1].rstrip(")"))) < 1.0


def test_resolution_far_from_training_is_flagged(scene_dir, checkpoint, tmp_path, capsys, caplog):
    code, cap = run(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 4, "--resolution", "128x64",
                     "--out", tmp_path / "out", "--no-lpips", "--native-sh"], capsys)
    assert code == 0, cap.err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # trained with short side 32 (the checkpoint's metadata), run at 64: twice the Gaussians' trained footprint
    assert "128x64 is 2x the resolution this checkpoint was trained at (short side 32)" in caplog.text
    assert "--resolution 32 matches" in metrics["warnings"][0]
    assert load_ply(tmp_path / "out" / "gaussians.ply").sh_degree == build_model("tiny").config.gaussians.sh_degree == 1


def test_ply_is_in_the_original_world_frame(scene_dir, checkpoint, tmp_path, capsys):
    """Every kept Gaussian lies on the ray of its input pixel, in world coordinates."""
    out = tmp_path / "out"
    code, cap = run(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 4, *RESOLUTION,
                     "--min-opacity", 0, "--out", out, "--no-lpips"], capsys)
    assert code == 0, cap.err
    g = load_ply(out / "gaussians.ply").means.double().reshape(4, 32, 64, 3)
    cams = json.loads((out / "cameras.json").read_text())["inputs"]
    for v, cam in enumerate(cams):
        c2w = torch.tensor(cam["c2w"], dtype=torch.float64)
        local = (g[v] - c2w[:3, 3]) @ c2w[:3, :3]  # camera coordinates
        x = cam["fx"] * local[..., 0] / local[..., 2] + cam["cx"]
        y = cam["fy"] * local[..., 1] / local[..., 2] + cam["cy"]
        jj, ii = torch.meshgrid(torch.arange(64.0), torch.arange(32.0), indexing="xy")
        assert torch.allclose(x, jj.double() + 0.5, atol=1e-2) and torch.allclose(y, ii.double() + 0.5, atol=1e-2)


def test_no_argument_default_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "infer.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    outputs = list((tmp_path / "outputs").iterdir())
    assert len(outputs) == 1
    metrics = json.loads((outputs[0] / "metrics.json").read_text())
    assert metrics["num_targets"] > 0 and metrics["mean"]["psnr"] > 0
    assert "held-out: PSNR" in proc.stdout


def _write_frames(folder: Path, sizes: list[tuple[int, int]]):
    (folder / "images_4").mkdir(parents=True)
    frames = []
    for i, (w, h) in enumerate(sizes):
        name = f"images_4/frame_{i + 1:05d}.png"
        iio.imwrite(folder / name, np.full((h, w, 3), 128, np.uint8))
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * i
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    (folder / "transforms.json").write_text(json.dumps(
        {"w": sizes[0][0], "h": sizes[0][1], "fl_x": 50.0, "fl_y": 50.0, "cx": sizes[0][0] / 2, "cy": sizes[0][1] / 2,
         "k1": 0, "k2": 0, "p1": 0, "p2": 0, "camera_model": "OPENCV", "frames": frames}))
    return folder


def bad_cases(tmp_path, scene_dir, checkpoint):
    """(arguments, a fragment the one-line error must contain)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    missing_img = _write_frames(tmp_path / "missing_img", [(64, 32)] * 4)
    (missing_img / "images_4/frame_00002.png").unlink()
    unreadable = _write_frames(tmp_path / "unreadable", [(64, 32)] * 4)
    (unreadable / "images_4/frame_00003.png").write_bytes(b"not an image")
    mixed = _write_frames(tmp_path / "mixed", [(64, 32)] * 3 + [(80, 32)])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    other_arch = tmp_path / "other.safetensors"
    write_checkpoint(other_arch)
    meta_config = to_dict(build_model("tiny").config)
    meta_config["merged_dim"] = 96  # a valid network, but not the one these weights belong to
    from safetensors import safe_open

    with safe_open(str(other_arch), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(other_arch), metadata={"model_config": json.dumps(meta_config)})
    full_out = tmp_path / "full"
    full_out.mkdir()
    (full_out / "mine.txt").write_text("keep me")
    ok = ["--checkpoint", checkpoint, *RESOLUTION, "--no-lpips"]
    return [
        (["--views", tmp_path / "nope", *ok], "does not exist"),
        (["--views", empty, *ok], "transforms.json"),
        (["--views", missing_img, *ok], "frame_00002.png"),
        (["--views", unreadable, *ok], "frame_00003.png"),
        (["--views", mixed, *ok], "size"),
        (["--views", scene_dir, "--num-views", 1, *ok], "at least 2"),
        (["--views", scene_dir, "--checkpoint", checkpoint, "--resolution", "60x32"], "multiples of 16"),
        (["--views", scene_dir, "--checkpoint", tmp_path / "none.safetensors"], "does not exist"),
        (["--views", scene_dir, "--checkpoint", corrupt], "not a readable safetensors"),
        (["--views", scene_dir, "--checkpoint", other_arch, *RESOLUTION], "does not match the architecture"),
        (["--views", scene_dir, *ok, "--out", full_out], "not empty"),
    ] + ([] if torch.cuda.is_available() else [(["--views", scene_dir, *ok, "--device", "cuda"], "no CUDA device")])


def test_bad_inputs_give_one_clear_line(tmp_path, scene_dir, checkpoint, capsys):
    for args, fragment in bad_cases(tmp_path, scene_dir, checkpoint):
        args = args + ([] if "--out" in args else ["--out", tmp_path / "o" / str(abs(hash(str(args))))])
        code, cap = run(args, capsys)
        assert code == infer.EXIT_BAD_INPUT, (args, cap.err)
        lines = [line for line in cap.err.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and fragment in lines[0], (args, cap.err)
        assert "Traceback" not in cap.err
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"


def test_fewer_frames_than_requested_uses_all_with_a_warning(scene_dir, checkpoint, tmp_path, capsys, caplog):
    code, cap = run(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 64, *RESOLUTION, "--no-lpips",
                     "--out", tmp_path / "out"], capsys)
    assert code == 0, cap.err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_inputs"] == 20
    assert "fewer than the 64 requested" in caplog.text
