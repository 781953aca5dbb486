"""bf16 inference: what LongLRM.set_precision converts, its agreement with float32 on a trained and on a
random paper-size network, and the detection of native bf16 matmuls on this CPU."""

import functools
import platform
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

from data.procedural.cameras import c2w_from_forward, intrinsics_from_fov
from model.pretrained import DEMO_CHECKPOINT, load_model
from inference.demo import demo_scene
from inference.reconstruct import Options, reconstruct
from model.build import build_model
from model.cameras import Cameras
from model.config import GaussianHeadConfig, preset
from model.cpu_features import NATIVE_BF16_FLAGS, native_bf16_matmul
from model.gaussian_head import GaussianHead
from model.metrics import psnr


def ring_of_views(views: int, size: int) -> tuple[torch.Tensor, Cameras]:
    """Random images seen by level cameras on a circle of radius 2, looking at its centre."""
    images = torch.rand(1, views, size, size, 3, generator=torch.Generator().manual_seed(0))
    angles = np.linspace(0, 2 * np.pi, views, endpoint=False)
    positions = 2 * np.stack([np.sin(angles), np.zeros(views), np.cos(angles)], axis=-1)  # [V, 3]
    c2w = c2w_from_forward(positions, -positions)[None]  # [1, V, 4, 4]
    return images, Cameras(intrinsics_from_fov(size, size, 64).repeat(1, views, 1), c2w, size, size)


def test_set_precision_converts_the_matmul_weights_and_nothing_else():
    model = build_model("tiny")
    assert model.set_precision(torch.bfloat16) is model
    converted = {name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))}
    for name, param in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        expected = torch.bfloat16 if owner in converted else torch.float32
        assert param.dtype == expected, f"{name}: {param.dtype}"
    # what stays float32: norms, the scan's own parameters, its depthwise conv, the global tokens
    assert {"norm", "A_log", "D", "dt_bias", "conv1d", "global_tokens"} <= {
        part for name, p in model.named_parameters() if p.dtype == torch.float32 for part in name.split(".")}
    with pytest.raises(ValueError, match="float32 or torch.bfloat16"):
        model.set_precision(torch.float16)


def test_bf16_head_gives_the_same_float32_gaussians_in_any_number_of_chunks():
    """The head decodes a few views at a time without autograd, widening bf16 outputs into float32
    buffers; with autograd it concatenates. Both must give the one-chunk result, in float32: exactly
    without autograd (the same native kernel, chunk by chunk), to float32 rounding with it (the
    PyTorch twin of the kernel)."""
    torch.manual_seed(0)
    chunked = GaussianHead(16, 4, GaussianHeadConfig(views_per_chunk=2))
    whole = GaussianHead(16, 4, GaussianHeadConfig(views_per_chunk=100))
    whole.load_state_dict(chunked.state_dict())
    chunked.proj.bfloat16(), whole.proj.bfloat16()
    _, cameras = ring_of_views(5, 8)
    origins, dirs = cameras.rays()  # [1, 5, 8, 8, 3] each
    tokens = torch.randn(1, 5 * 4, 16)
    with torch.no_grad():
        expected, expected_distance = whole(tokens, origins, dirs)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            got, distance = chunked(tokens, origins, dirs)
        same = torch.equal if not grad else functools.partial(torch.allclose, rtol=1e-6, atol=0)
        assert same(distance, expected_distance)
        for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
            assert getattr(got, name).dtype == torch.float32
            assert same(getattr(got, name), getattr(expected, name)), name


def test_demo_checkpoint_in_bf16_keeps_held_out_psnr_and_renders(tmp_path):
    """The shipped (trained) network through the whole inference pipeline, once per precision:
    held-out PSNR against the real frames within 0.05 dB, and the saved renders themselves within
    35 dB of each other (measured: 0.001 dB apart, renders 59 dB apart)."""
    scene = demo_scene()
    loaded = load_model(DEMO_CHECKPOINT, torch.device("cpu"))
    results = {}
    for name in ("fp32", "bf16"):  # fp32 first: bf16 rounds the weights in place
        out = tmp_path / name
        out.mkdir()
        results[name] = reconstruct(scene, loaded, Options(num_views=8, holdout=True, lpips=False, precision=name),
                                    out, torch.device("cpu"))
    assert abs(results["bf16"].metrics["psnr"] - results["fp32"].metrics["psnr"]) <= 0.05
    renders = sorted((tmp_path / "fp32" / "renders").glob("*_pred.png"))
    assert len(renders) >= 4
    for path in renders:
        fp32 = torch.from_numpy(iio.imread(path)).float() / 255
        bf16 = torch.from_numpy(iio.imread(tmp_path / "bf16" / "renders" / path.name)).float() / 255
        assert psnr(bf16[None], fp32[None]).item() >= 35


def test_random_paper_network_in_bf16_is_the_autocast_result_within_its_rounding_sensitivity():
    """The paper's network (all 24 blocks at full width), randomly initialised, on 4 views of 128x128.

    Oracle 1, torch.autocast(bfloat16) on the float32 network (how the authors evaluate): set_precision
    must give exactly its result, so it rounds nothing autocast would not and leaves out no matmul.
    Oracle 2, the float32 network: bf16 keeps 8 significant bits, so each matmul's weights, inputs and
    outputs are rounded by up to 2^-9. How far that moves the Gaussians is the network's own
    sensitivity, measured here by rounding only the weights to bf16 and computing in float32: up to
    0.48% of the means' range for this random network (random weights amplify rounding; the trained
    demo checkpoint moves by at most 0.07% of its range with everything in bf16). Three roundings of
    that size per matmul allow 3x that error; measured 2.1-2.2x over three seeds. The head's constants
    put the Gaussians at scene scale (max_dist 4), opaque and pixel-sized, as a trained head makes
    them; they do not change the network.
    """
    torch.manual_seed(0)
    config = preset("paper")
    config.gaussians.max_dist, config.gaussians.scale_bias, config.gaussians.opacity_bias = 4.0, -3.5, 2.0
    model = build_model(config).eval()
    images, cameras = ring_of_views(4, 128)
    with torch.inference_mode():
        exact = model(images, cameras).gaussians.means
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    module.weight.copy_(module.weight.bfloat16())
                    if module.bias is not None:
                        module.bias.copy_(module.bias.bfloat16())
        weights_only = model(images, cameras).gaussians.means
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(images, cameras).gaussians.means
        bf16 = model.set_precision(torch.bfloat16)(images, cameras).gaussians.means
    assert torch.equal(bf16, autocast)
    extent = (exact.amax(1) - exact.amin(1)).max()
    error, baseline = (bf16 - exact).norm(dim=-1), (weights_only - exact).norm(dim=-1)
    assert error.max() <= 3 * baseline.max() and error.median() <= 3 * baseline.median()
    assert error.max() <= 0.02 * extent  # measured 0.93-1.05%
    assert error.max() > baseline.max() / 2  # bf16 really ran (float32 arithmetic would add ~nothing)


@pytest.mark.parametrize("flags, native", [
    ({"amx_bf16": True, "avx512_bf16": True}, True),  # Sapphire Rapids and later
    ({"amx_bf16": False, "avx512_bf16": True}, True),  # Cooper Lake, Zen 4
    ({"avx512_f": True, "avx2": True}, False),  # Skylake-SP .. Ice Lake: bf16 only emulated
    ({"avx2": True}, False),
])
def test_native_bf16_needs_amx_or_avx512_bf16(flags, native):
    ok, reason = native_bf16_matmul({"architecture": "x86_64", **flags})
    assert ok is native
    assert all(flag in reason for flag in NATIVE_BF16_FLAGS) or any(flags.get(f) for f in NATIVE_BF16_FLAGS)


def test_native_bf16_is_not_claimed_off_x86():
    ok, reason = native_bf16_matmul({"architecture": "aarch64", "bf16": True})
    assert not ok and "aarch64" in reason


@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(), reason="x86 Linux only")
def test_native_bf16_detection_agrees_with_the_kernel_cpu_flags():
    flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags"))
    assert native_bf16_matmul()[0] == bool(set(flags) & set(NATIVE_BF16_FLAGS))
