"""--precision auto|fp32|bf16: the choice per device, what it changes, and how infer.py / evaluate.py record it."""

import csv
import json
import logging

import pytest
import torch

from inference import evaluate, infer
from model import fast_path
from model.build import build_model
from model.cpu_features import native_bf16_matmul
from model.precision import resolve_precision
from tests.support import random_cameras, random_images


AMX = {"architecture": "x86_64", "amx_bf16": True, "avx512_bf16": True}  # Sapphire Rapids
ZEN4 = {"architecture": "x86_64", "amx_bf16": False, "avx512_bf16": True}
SKYLAKE = {"architecture": "x86_64", "amx_bf16": False, "avx512_bf16": False}
ARM = {"architecture": "aarch64"}


@pytest.mark.parametrize("requested, device, hardware, name, reason", [
    ("auto", "cuda", (8, 0), "bf16", "compute capability 8.0 has native bf16"),  # A100: as the authors evaluate
    ("auto", "cuda", (9, 0), "bf16", "has native bf16"),
    ("auto", "cuda", (7, 5), "fp32", "compute capability 7.5 has no native bf16"),  # T4
    ("auto", "cuda", (7, 0), "fp32", "has no native bf16"),  # V100
    ("fp32", "cuda", (8, 0), "fp32", "requested"),
    ("bf16", "cuda", (8, 6), "bf16", "requested"),
    ("bf16", "cuda", (7, 5), "bf16", "7.5 has no native bf16: emulated, slow"),
    ("auto", "cpu", AMX, "bf16", "auto: CPU has amx_bf16 and avx512_bf16"),
    ("auto", "cpu", ZEN4, "bf16", "auto: CPU has avx512_bf16"),
    ("auto", "cpu", SKYLAKE, "fp32", "auto: CPU lacks amx_bf16 and avx512_bf16"),
    ("auto", "cpu", ARM, "fp32", "aarch64 CPU"),
    ("fp32", "cpu", SKYLAKE, "fp32", "requested"),
    ("bf16", "cpu", AMX, "bf16", "requested"),
    ("bf16", "cpu", SKYLAKE, "bf16", "emulated, slow"),
])
def test_choice_per_device(requested, device, hardware, name, reason):
    gpu, cpu = (hardware, None) if device == "cuda" else (None, hardware)
    precision = resolve_precision(requested, torch.device(device), gpu, cpu)
    assert (precision.name, precision.device_type) == (name, device)
    assert reason in precision.reason


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_choice_is_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    with caplog.at_level(logging.INFO, logger="model.precision"):
        for _ in range(2):
            resolve_precision("auto", torch.device("cpu"), cpu_capabilities=SKYLAKE)
    assert [r.getMessage() for r in caplog.records if r.name == "model.precision"] == [
        "network precision: fp32 on cpu (auto: CPU lacks amx_bf16 and avx512_bf16 (bfloat16 matmuls would be "
        "emulated in float32)); the residual stream, norms, the scan's state, rendering and the losses stay fp32"]


def test_apply_converts_the_network_only_for_bf16():
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = build_model("tiny")
        assert resolve_precision(name, torch.device("cpu")).apply(model) is model
        assert model.head.proj.weight.dtype == dtype and model.tokenizer.global_tokens.dtype == torch.float32


def test_cpu_bf16_network_agrees_with_fp32():
    """The network under bf16 autocast against its own fp32 forward (the oracle), outputs still fp32."""
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    images, cameras = random_images(1, 3, 32, 48), random_cameras(1, 3, 32, 48)
    outputs = {}
    for name in ("fp32", "bf16"):  # fp32 first: bf16 rounds the weights in place
        with torch.no_grad():
            outputs[name] = resolve_precision(name, torch.device("cpu")).apply(model)(images, cameras)
    for field in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        got, expected = getattr(outputs["bf16"].gaussians, field), getattr(outputs["fp32"].gaussians, field)
        assert got.dtype == torch.float32, field
        scale = expected.abs().mean()
        assert (got - expected).abs().mean() < 0.02 * scale, field  # bf16 keeps 8 bits of mantissa
    torch.testing.assert_close(outputs["bf16"].distance, outputs["fp32"].distance, rtol=0.05, atol=0.5)


def test_infer_records_the_precision(scene_dir, checkpoint, tmp_path, capsys):
    metrics = {}
    for requested in ("auto", "fp32", "bf16"):
        out = tmp_path / requested
        code = infer.main(["--views", str(scene_dir), "--checkpoint", str(checkpoint), "--num-views", "4",
                           "--resolution", "64x32", "--eval", "--no-lpips", "--precision", requested,
                           "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        metrics[requested] = json.loads((out / "metrics.json").read_text())
    auto = "bf16" if native_bf16_matmul()[0] else "fp32"
    assert [metrics[r]["precision"] for r in ("auto", "fp32", "bf16")] == [auto, "fp32", "bf16"]
    assert metrics["auto"]["mean"] == metrics[auto]["mean"]
    assert abs(metrics["bf16"]["mean"]["psnr"] - metrics["fp32"]["mean"]["psnr"]) < 0.5
    assert "network in bf16" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        infer.main(["--views", str(scene_dir), "--checkpoint", str(checkpoint), "--precision", "fp16"])
    assert exit_.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_evaluate_records_the_precision_and_refuses_to_mix(scene_dir, checkpoint, tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "room").symlink_to(scene_dir, target_is_directory=True)
    args = ["--scenes", str(bench), "--checkpoint", str(checkpoint), "--num-views", "4", "--resolution", "64x32",
            "--out", str(tmp_path / "res"), "--no-lpips"]
    assert evaluate.main(args + ["--precision", "bf16"]) == 0
    rows = list(csv.DictReader((tmp_path / "res" / "per_scene.csv").open()))
    assert [r["precision"] for r in rows] == ["bf16"]
    assert "Network in bf16, rendering in fp32;" in (tmp_path / "res" / "summary.md").read_text()
    capsys.readouterr()
    # resuming at another precision would average two kinds of numbers into one summary
    assert evaluate.main(args + ["--precision", "fp32"]) == 2
    assert "precision bf16 there, fp32 now" in capsys.readouterr().err
    assert evaluate.main(args + ["--precision", "bf16"]) == 0
    # a table written before the precision column existed is not appended to
    old = tmp_path / "old"
    old.mkdir()
    (old / "per_scene.csv").write_text("scene,inputs,targets,width,height,psnr,ssim,lpips,seconds,gaussians\n")
    capsys.readouterr()
    assert evaluate.main(args[:-3] + ["--out", str(old), "--no-lpips"]) == 2
    assert "choose another --out" in capsys.readouterr().err
