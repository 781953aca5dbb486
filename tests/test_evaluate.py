"""evaluate.py: the DL3DV-140 protocol over a folder of scenes, resumable."""

import csv

import evaluate
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from tests.test_infer import write_checkpoint


def test_two_scenes_then_resume(tmp_path, capsys):
    for seed in (3, 4):
        write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=17, width=64, height=32, seed=seed)),
                          tmp_path / "bench" / f"scene{seed}")
    ckpt = write_checkpoint(tmp_path / "tiny.safetensors")
    args = ["--scenes", str(tmp_path / "bench"), "--checkpoint", str(ckpt), "--num-views", "4",
            "--resolution", "64x32", "--out", str(tmp_path / "res"), "--no-lpips"]
    assert evaluate.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "res" / "per_scene.csv").open()))
    assert sorted(r["scene"] for r in rows) == ["scene3", "scene4"]
    assert all(r["inputs"] == "4" and r["targets"] == "3" for r in rows)  # frames 0, 8, 16 held out
    summary = (tmp_path / "res" / "summary.md").read_text()
    mean_psnr = sum(float(r["psnr"]) for r in rows) / 2
    assert f"{mean_psnr:.2f} /" in summary and "| 4 | tiny.safetensors |" in summary
    # interrupted runs resume: a second call finds both scenes done and appends nothing
    before = (tmp_path / "res" / "per_scene.csv").read_text()
    assert evaluate.main(args) == 0
    assert (tmp_path / "res" / "per_scene.csv").read_text() == before
    capsys.readouterr()
    assert evaluate.main(["--scenes", str(tmp_path / "nothing"), "--checkpoint", str(ckpt), "--out",
                          str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err
