"""evaluate.py: the DL3DV-140 protocol over a folder of scenes, resumable, and every bad input."""

import csv
import shutil

import pytest

from inference import evaluate
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from tests.support import one_error_line, write_checkpoint


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    for seed in (3, 4):
        write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=17, width=64, height=32, seed=seed)),
                          root / "scenes" / f"scene{seed}")
    write_checkpoint(root / "tiny.safetensors")
    return root


def args_for(bench, out, *extra, checkpoint=None, views=4, resolution="64x32"):
    return ["--scenes", str(bench / "scenes"), "--checkpoint", str(checkpoint or bench / "tiny.safetensors"),
            "--num-views", str(views), "--resolution", resolution, "--out", str(out), "--no-lpips", *map(str, extra)]


def refused(args, capsys, fragment: str) -> str:
    code = evaluate.main(args)
    return one_error_line(code, capsys.readouterr().err, fragment)


def rows(out):
    return list(csv.DictReader((out / "per_scene.csv").open()))


def test_two_scenes_then_resume(bench, tmp_path, capsys):
    out = tmp_path / "res"
    assert evaluate.main(args_for(bench, out)) == 0
    table = rows(out)
    assert sorted(r["scene"] for r in table) == ["scene3", "scene4"]
    assert all(r["inputs"] == "4" and r["targets"] == "3" for r in table)  # frames 0, 8, 16 held out
    summary = (out / "summary.md").read_text()
    mean_psnr = sum(float(r["psnr"]) for r in table) / 2
    assert f"{mean_psnr:.2f} /" in summary and "| 4 | tiny.safetensors |" in summary
    # interrupted runs resume: a second call finds both scenes done and appends nothing
    before = (out / "per_scene.csv").read_text()
    assert evaluate.main(args_for(bench, out)) == 0
    assert (out / "per_scene.csv").read_text() == before
    capsys.readouterr()
    refused(["--scenes", str(tmp_path / "nothing"), "--checkpoint", str(bench / "tiny.safetensors"), "--out",
             str(tmp_path / "x")], capsys, "not a folder")


def test_rerun_with_other_settings_is_refused_not_mixed(bench, tmp_path, capsys):
    """Rows carry everything their result depends on; another checkpoint (even under the same name),
    view count, resolution or pruning in the same --out is refused and the table stays as it was."""
    out = tmp_path / "res"
    assert evaluate.main(args_for(bench, out)) == 0
    table, summary = (out / "per_scene.csv").read_text(), (out / "summary.md").read_text()
    retrained = tmp_path / "retrained" / "tiny.safetensors"  # same name, other weights
    retrained.parent.mkdir()
    write_checkpoint(retrained)
    assert retrained.read_bytes() != (bench / "tiny.safetensors").read_bytes()
    for args, fragment in [(args_for(bench, out, checkpoint=retrained), "checkpoint_sha256"),
                           (args_for(bench, out, views=3), "views 4 there, 3 now"),
                           (args_for(bench, out, resolution="32x16"), "resolution 64x32 there, 32x16 now"),
                           (args_for(bench, out, "--min-opacity", 0.5), "preprocessing"),
                           (args_for(bench, out, "--refine-steps", 1), "refine_steps 0 there, 1 now")]:
        line = refused(args, capsys, "holds results made with other settings")
        assert fragment in line, line
    assert (out / "per_scene.csv").read_text() == table and (out / "summary.md").read_text() == summary


def test_no_scene_evaluated_is_an_error(bench, tmp_path, capsys):
    scenes = tmp_path / "scenes"
    for name in ("a", "b"):  # camera files whose frames are missing
        shutil.copytree(bench / "scenes" / "scene3", scenes / name)
        shutil.rmtree(scenes / name / "images_4")
    code = evaluate.main(["--scenes", str(scenes), "--checkpoint", str(bench / "tiny.safetensors"), "--num-views", "4",
                          "--resolution", "64x32", "--out", str(tmp_path / "res"), "--no-lpips"])
    err = capsys.readouterr().err
    one_error_line(code, err, "no scene was evaluated: all 2 under")
    assert sum(line.startswith("skipped ") for line in err.splitlines()) == 2
    assert not (tmp_path / "res").exists()  # nothing to keep: the folder it created is gone


def test_a_row_cut_short_is_evaluated_again(bench, tmp_path, caplog):
    out = tmp_path / "res"
    assert evaluate.main(args_for(bench, out)) == 0
    complete = (out / "per_scene.csv").read_text()
    cut = complete.rstrip("\r\n")
    (out / "per_scene.csv").write_text(cut[:len(cut) - 40])  # the run died while writing the last row
    assert evaluate.main(args_for(bench, out)) == 0
    again = [{k: v for k, v in r.items() if k != "seconds"} for r in rows(out)]
    assert again == [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(complete.splitlines())]
    assert "the last row was cut short" in caplog.text


def test_bad_out_and_options_are_refused(bench, tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    refused(args_for(bench, a_file), capsys, "is a file")
    assert a_file.read_text() == "mine"
    refused(args_for(bench, tmp_path / "res", views=0), capsys, "--num-views must be at least 2")
    refused(args_for(bench, tmp_path / "res", "--min-opacity", "nan"), capsys, "--min-opacity must be in [0, 1)")
    for name, content in (("other-columns", b"name,score\nx,1\n"), ("binary", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"),
                          ("damaged-row", None)):
        out = tmp_path / name
        out.mkdir()
        if content is None:  # a complete line that is not a row of ours
            assert evaluate.main(args_for(bench, out)) == 0
            content = (out / "per_scene.csv").read_bytes().replace(b"scene4,", b"scene4;", 1)
        (out / "per_scene.csv").write_bytes(content)
        fragment = "is damaged" if name == "damaged-row" else "was not written by this version of evaluate.py"
        refused(args_for(bench, out), capsys, fragment)
        assert (out / "per_scene.csv").read_bytes() == content
