"""`python infer.py --check` on this machine: what it reports, checked against what a real run does."""

import logging
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from inference import infer
from inference.check import PACKAGES, paths
from model.pretrained import DEMO_CHECKPOINT, load_model
from model import fast_path
from model.build import build_model
from model.config import preset
from model.cpu_features import native_bf16_matmul
from model.precision import resolve_precision
from tests.support import random_cameras, random_images

ROOT = Path(__file__).resolve().parent.parent
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="describes a machine without CUDA")


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), "--check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def imports_in_a_fresh_interpreter(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


@cpu_only
def test_check_describes_this_machine():
    proc = run_check()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    assert lines[0] == f"python {platform.python_version()}, torch {torch.__version__} ({build})"
    assert lines[1:3] == ["CUDA: not available", "device: cpu"]
    for name, (_, module) in PACKAGES.items():
        line = next(line for line in lines if line.split()[0] == name)
        if imports_in_a_fresh_interpreter(module):
            assert line.endswith(", imports"), line
        else:
            assert "not installed" in line or "import fails" in line, line
    assert f"network: {DEMO_CHECKPOINT}" in proc.stdout
    auto = "bf16" if native_bf16_matmul()[0] else "fp32"
    assert f"precision: {auto} on cpu (auto: {native_bf16_matmul()[1]}); the residual stream, norms, the scan's " \
           "state, rendering and the losses stay fp32" in lines
    assert proc.stderr == ""  # the report says it all, once


def test_check_precision_and_device_options(capsys):
    assert infer.main(["--check", "--precision", "bf16", "--device", "cpu"]) == 0
    assert "precision: bf16 on cpu (requested" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert infer.main(["--check", "--device", "cuda"]) == 2
        assert capsys.readouterr().err.startswith("error: --device cuda was requested")


def logged_choices(model, images, cameras, caplog, monkeypatch, precision) -> dict[str, str]:
    """Run the network and the renderer for real and collect the fast-path decisions they log."""

    monkeypatch.setattr(fast_path, "_reported", set())
    precision.apply(model)
    with caplog.at_level(logging.INFO), torch.no_grad():
        out = model(images, cameras)
        out.gaussians.render(cameras[:, :1])
    choices = {}
    for record in caplog.records:
        operation, _, what = record.getMessage().partition(": ")
        choices.setdefault(operation, []).append(what)
    return choices


@pytest.mark.parametrize("precision_name", ["fp32", "bf16"])
def test_reported_paths_are_the_ones_a_run_takes(precision_name, caplog, monkeypatch):
    loaded = load_model(DEMO_CHECKPOINT)
    device = torch.device("cpu")
    precision = resolve_precision(precision_name, device)
    reported = dict(paths(loaded.model, device, precision))
    b, v, h, w = 1, 2, 64, 64
    ran = logged_choices(loaded.model, random_images(b, v, h, w), random_cameras(b, v, h, w), caplog, monkeypatch,
                         precision)
    ssd_line = next(path for op, path in reported.items() if op.startswith("SSD scan"))
    assert ran["SSD scan"] == [ssd_line]
    chunks_line = next(path for op, path in reported.items() if op.startswith("SSD chunk_scan"))
    assert ran["SSD chunk_scan"] == [chunks_line] == ["native CPU kernel"]
    conv_lines = {path for op, path in reported.items() if op.startswith("causal conv1d")}
    assert set(ran["causal conv1d"]) == conv_lines
    attention_lines = {path for op, path in reported.items() if op.startswith("attention")}
    assert set(ran["attention"]) == attention_lines
    assert ran["rasterizer backend"][0].split()[0] == reported["rendering"].split()[0]


def test_reported_paths_follow_the_config_backends():
    config = preset("tiny")
    forced = build_model(replace(config, mamba_backend="torch", attention_backend="flash"))
    report = dict(paths(forced, torch.device("cpu"), resolve_precision("fp32", torch.device("cpu"))))
    assert report["SSD scan, 3 Mamba2 blocks"] == "pure-PyTorch chunk_scan (requested)"
    assert report["causal conv1d, width 32, 2 blocks, in_proj width 164"] == "PyTorch depthwise convolution (oneDNN) (requested)"
    assert report["attention, width 32, head dim 16, 1 block"] == (
        "error at run time, backend 'flash' was requested (running on cpu)")
    with pytest.raises(RuntimeError, match="'flash' requested but flash-attn cannot run: running on cpu$"):
        forced(random_images(1, 2, 16, 16), random_cameras(1, 2, 16, 16))


@pytest.mark.parametrize("name, widths", [("paper", [(256, 1544), (1024, 4640)]), ("small", [(64, 388), (256, 1168)]),
                                          ("tiny", [(32, 164), (64, 296)])])
def test_every_preset_is_described(name, widths):
    model = build_model(name, device="meta")
    report = paths(model, torch.device("cpu"), resolve_precision("auto", torch.device("cpu")))
    operations = [op for op, _ in report]
    for width, in_proj in widths:
        assert any(op.startswith(f"causal conv1d, width {width},") and op.endswith(f"in_proj width {in_proj}")
                   for op in operations), operations
    heads = {block.attn.head_dim for block in model.blocks if hasattr(block, "attn")}
    assert heads == {preset(name).attn_head_dim}
    assert sum(op.startswith("attention") for op in operations) == len(
        {w for kind, w in zip(preset(name).blocks, preset(name).widths) if kind == "t"})
