"""`inference.reconstruct` as a library call: Gaussians in memory, files only when an output folder is given."""

import json
import os

import pytest
import torch

from data.open_scene import open_scene
from inference import Options, Result, reconstruct
from model.pretrained import load_model
from model.ply import load_ply

OPTIONS = Options(num_views=4, resolution="64x32", holdout=True, lpips=False, min_opacity=0)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


def test_in_memory_gaussians_are_the_written_ply(scene_dir, checkpoint, tmp_path, monkeypatch):
    loaded = load_model(checkpoint)
    scene = open_scene(scene_dir)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = files_under(scene_dir)
    in_memory = reconstruct(scene, loaded, OPTIONS)
    assert isinstance(in_memory, Result) and in_memory.out_dir is None
    assert files_under(work) == [] and files_under(scene_dir) == before  # nothing written without an output folder
    assert in_memory.num_targets == 3 and set(in_memory.metrics) == {"psnr", "ssim", "lpips"}
    assert in_memory.metrics["psnr"] > 0 and in_memory.metrics["lpips"] is None  # scored all the same

    out = tmp_path / "out"
    out.mkdir()
    written = reconstruct(scene, loaded, OPTIONS, out_dir=out)
    assert written.out_dir == out
    ply = load_ply(out / "gaussians.ply")  # padded to SH degree 3, the higher bands zero
    g = in_memory.gaussians
    assert g.count == ply.count == in_memory.kept == 4 * 64 * 32 and g.sh_degree == 1 < ply.sh_degree == 3
    for name in ("means", "log_scales", "quats", "opacity_logits"):
        torch.testing.assert_close(getattr(g, name), getattr(ply, name), rtol=0, atol=0, msg=name)  # float32 both
    k = g.sh.shape[1]
    torch.testing.assert_close(g.sh, ply.sh[:, :k], rtol=0, atol=0)
    assert not ply.sh[:, k:].any()
    assert written.gaussians.count == g.count and torch.equal(written.gaussians.means, g.means)
    # metrics come from the same 8-bit renders with or without files
    assert written.metrics == in_memory.metrics == json.loads((out / "metrics.json").read_text())["mean"]


def test_a_video_needs_an_output_folder(scene_dir, checkpoint):
    with pytest.raises(ValueError, match="give an output folder"):
        reconstruct(open_scene(scene_dir), load_model(checkpoint), Options(num_views=4, video=True))
