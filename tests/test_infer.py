"""End-to-end: infer.py on a small generated scene with a tiny network, and every bad input."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from inference import infer
from model.build import build_model
from model.ply import load_ply
from model.typed_config import to_dict
from tests.support import one_error_line, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = ["--resolution", "64x32"]


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


def refused(args, capsys, fragment: str) -> str:
    code, cap = run(args, capsys)
    return one_error_line(code, cap.err, fragment)


def test_bad_inputs_give_one_clear_line(tmp_path, scene_dir, checkpoint, capsys):
    for args, fragment in bad_cases(tmp_path, scene_dir, checkpoint):
        out = tmp_path / "o" / str(abs(hash(str(args))))
        refused(args + ([] if "--out" in args else ["--out", out]), capsys, fragment)
        assert not out.exists()  # a folder the run created is removed again
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"


def test_fewer_frames_than_requested_uses_all_with_a_warning(scene_dir, checkpoint, tmp_path, capsys, caplog):
    code, cap = run(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 64, *RESOLUTION, "--no-lpips",
                     "--out", tmp_path / "out"], capsys)
    assert code == 0, cap.err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_inputs"] == 20
    assert "fewer than the 64 requested" in caplog.text


def run_limited(args, file_size: int | None = None, memory: int | None = None) -> subprocess.CompletedProcess:
    """infer.py in a child process whose files may not grow beyond `file_size` bytes (a write past it
    fails with EFBIG, as on a full disk) and whose address space is capped at `memory` bytes."""
    limits = "".join([
        f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size},) * 2);"
        if file_size is not None else "",
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory},) * 2);" if memory is not None else ""])
    code = f"import resource, runpy, signal, sys; {limits} sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, str(ROOT / "infer.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_unwritable_out_is_refused_before_any_work(scene_dir, checkpoint, tmp_path, rasterizer_built):
    args = ["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 4, *RESOLUTION, "--no-lpips", "--eval"]
    proc = run_limited([*args, "--out", tmp_path / "new" / "out"], file_size=0)  # no byte can be written
    one_error_line(proc.returncode, proc.stderr, "cannot be written to (File too large)")
    assert "checkpoint:" not in proc.stdout  # refused before the checkpoint was even loaded
    assert not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # permissions do not stop root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        proc = run_limited([*args, "--out", locked, "--overwrite"])
        one_error_line(proc.returncode, proc.stderr, "cannot be written to (Permission denied)")
        assert "checkpoint:" not in proc.stdout


def test_failed_write_leaves_the_folder_as_it_was(scene_dir, checkpoint, tmp_path, rasterizer_built):
    """A write failing half way (renders written, the PLY too large) removes every partial output and
    leaves what the folder held untouched, our earlier outputs included."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / "metrics.json").write_text('{"from": "an earlier run"}')
    proc = run_limited(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 4, *RESOLUTION, "--eval",
                        "--no-lpips", "--min-opacity", 0, "--out", out, "--overwrite"], file_size=64 * 1024)
    one_error_line(proc.returncode, proc.stderr, f"writing the outputs to {out} failed (File too large)")
    assert "held-out" not in proc.stdout  # the renders were written before the PLY failed
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"
    assert json.loads((out / "metrics.json").read_text()) == {"from": "an earlier run"}


def test_pruning_options_and_broken_weights_are_refused(scene_dir, checkpoint, tmp_path, capsys):
    ok = ["--views", scene_dir, "--num-views", 4, *RESOLUTION, "--no-lpips", "--out", tmp_path / "out"]
    for value in ("2", "1", "nan", "-0.1"):
        refused([*ok, "--checkpoint", checkpoint, "--min-opacity", value], capsys, "--min-opacity must be in [0, 1)")
    for option in ("--keep-ratio", "--random-ratio", "--scene-scale"):
        refused([*ok, "--checkpoint", checkpoint, option, "nan"], capsys, f"{option} must be")
    refused([*ok, "--checkpoint", checkpoint, "--scene-scale", "inf"], capsys, "--scene-scale must be positive and finite")
    # every Gaussian of the random network is about 0.12 opaque: a threshold above drops them all
    refused([*ok, "--checkpoint", checkpoint, "--min-opacity", "0.99"], capsys, "pruning kept none of the 8192")

    state = load_file(str(checkpoint))
    with safe_open(str(checkpoint), framework="pt") as f:
        meta = f.metadata()
    for name, broken, fragment in [
        ("nan.safetensors", {"blocks.0.mamba.in_proj.weight": float("nan")}, "NaN or infinite weights in 1 tensor(s) "
         "(blocks.0.mamba.in_proj.weight)"),
        ("inf.safetensors", {"tokenizer.global_tokens": float("inf")}, "NaN or infinite weights"),
        # finite weights so large the head overflows: the prediction itself is checked
        ("huge.safetensors", {"head.proj.weight": 1e38}, "predicted NaN or infinite Gaussian"),
    ]:
        tensors = {k: v.clone() for k, v in state.items()}
        for key, value in broken.items():
            tensors[key].fill_(value)
        save_file(tensors, str(tmp_path / name), metadata=meta)
        refused([*ok, "--checkpoint", tmp_path / name], capsys, fragment)
    assert not (tmp_path / "out").exists()


def test_checkpoint_kind_is_read_from_the_content(scene_dir, checkpoint, tmp_path, capsys):
    """A safetensors file named .pt loads as itself; a PyTorch file named .safetensors goes to the
    PyTorch loader; a pickled payload is refused without running it or naming an option the CLI lacks."""
    args = ["--views", scene_dir, "--num-views", 4, *RESOLUTION, "--no-lpips", "--min-opacity", 0]
    renamed = tmp_path / "model.pt"
    shutil.copy(checkpoint, renamed)
    for name, ckpt in (("renamed", renamed), ("original", checkpoint)):
        code, cap = run([*args, "--checkpoint", ckpt, "--out", tmp_path / name], capsys)
        assert code == 0, cap.err
    assert (tmp_path / "renamed" / "gaussians.ply").read_bytes() == (tmp_path / "original" / "gaussians.ply").read_bytes()

    torch_file = tmp_path / "weights.safetensors"
    torch.save(load_file(str(checkpoint)), torch_file)
    line = refused([*args, "--checkpoint", torch_file, "--out", tmp_path / "o"], capsys, "official Long-LRM checkpoint")
    assert "does not match the model" in line  # read as a PyTorch state dict, not parsed as safetensors

    marker = tmp_path / "payload-ran"
    torch.save({"model": _Payload(str(marker))}, tmp_path / "payload.pt")
    line = refused([*args, "--checkpoint", tmp_path / "payload.pt", "--out", tmp_path / "o"], capsys,
                   "holds Python objects besides tensors")
    assert "allow_pickle" not in line and not marker.exists()


class _Payload:
    """Unpickling this creates a file: what a weights-only load must never do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_resolution_beyond_memory_is_refused_naming_one_that_fits(scene_dir, checkpoint, tmp_path):
    """Checked before a frame is decoded at that size: the child's address space is capped at 4 GB,
    and a 20000x20000 view alone takes 4.8 GB as float."""
    proc = run_limited(["--views", scene_dir, "--checkpoint", checkpoint, "--num-views", 4, "--resolution",
                        "20000x20000", "--no-lpips", "--out", tmp_path / "out"], memory=4 * 2**30)
    line = one_error_line(proc.returncode, proc.stderr, "4 input views at 20000x20000 need about ")
    width, height = (int(v) for v in re.search(r"--resolution (\d+)x(\d+) would fit", line).groups())
    assert width == height and width % 16 == 0 and 256 <= width < 20000
    assert not (tmp_path / "out").exists()
