"""rasterize(): argument checking, backend choice and the gsplat-compatible return layout."""

from __future__ import annotations

import logging

import pytest
import torch
from render_scenes import tricky_scene

from model import fast_path
from model.render import rasterize


def scene(**overrides) -> dict:
    s = tricky_scene(n=20, n_cameras=2, width=24, height=16)
    s.update(overrides)
    return s


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("means", torch.zeros(20, 2), "means must be"),
        ("quats", torch.zeros(20, 3), "quats must be"),
        ("scales", torch.zeros(19, 3), "scales must be"),
        ("opacities", torch.zeros(20, 1), "opacities must be"),
        ("colors", torch.zeros(21, 3), "colors must be"),
        ("viewmats", torch.zeros(2, 3, 4), "viewmats must be"),
        ("Ks", torch.zeros(3, 3, 3), "Ks must be"),
        ("backgrounds", torch.zeros(2, 4), "backgrounds must be"),
        ("width", 0, "width and height"),
        ("render_mode", "RGBD", "render_mode must be"),
        ("sh_degree", 4, "sh_degree must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        rasterize(**scene(**{field: value}), backend="torch")


def test_sh_coefficients_must_cover_the_degree():
    s = tricky_scene(n=20, width=24, height=16, sh_degree=2)
    s["colors"] = s["colors"][:, :4]  # K = 4 < 9
    with pytest.raises(ValueError, match="needs K >= 9"):
        rasterize(**s)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'metal'"):
        rasterize(**scene(), backend="metal")


def test_unavailable_backends():
    with pytest.raises(ValueError, match="backend='gsplat' needs CUDA tensors"):
        rasterize(**scene(), backend="gsplat")
    float64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in scene().items()}
    with pytest.raises(ValueError, match="computes in float32"):
        rasterize(**float64, backend="cpu")
    rasterize(**float64, backend="torch")  # the reference takes any float dtype


def test_auto_picks_cpu_for_cpu_tensors_and_logs_it(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    with caplog.at_level(logging.INFO, logger="model.render"):
        _, _, meta = rasterize(**scene())
        rasterize(**scene())
    assert meta["backend"] == "cpu"
    records = [r for r in caplog.records if r.name == "model.render"]
    assert len(records) == 1 and "cpu" in records[0].getMessage()


@pytest.mark.parametrize("render_mode, channels", [("RGB", 3), ("D", 1), ("ED", 1), ("RGB+D", 4), ("RGB+ED", 4)])
def test_return_layout(render_mode, channels):
    s = tricky_scene(n=30, n_cameras=3, width=20, height=12, batch=(2,), sh_degree=1)
    colors, alphas, meta = rasterize(**s, render_mode=render_mode)
    assert colors.shape == (2, 3, 12, 20, channels) and alphas.shape == (2, 3, 12, 20, 1)
    assert meta["radii"].shape == (2, 3, 30, 2) and meta["radii"].dtype == torch.int32
    assert meta["means2d"].shape == (2, 3, 30, 2)
    assert meta["depths"].shape == (2, 3, 30) and meta["conics"].shape == (2, 3, 30, 3)
    assert (meta["width"], meta["height"], meta["n_cameras"], meta["n_batches"]) == (20, 12, 3, 2)


def test_means2d_grad_is_retained():
    s = scene()
    s["means"].requires_grad_(True)
    colors, _, meta = rasterize(**s)
    colors.sum().backward()
    assert meta["means2d"].grad is not None and meta["means2d"].grad.shape == (2, 20, 2)
    assert meta["means2d"].grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("sh_degree", [None, 2])
def test_per_camera_colors_match_one_camera_at_a_time(backend, sh_degree):
    # Oracle: each camera rendered alone with per-Gaussian colours set to that camera's colours;
    # each camera's own gradient (through its SH view directions too) must not see the others.
    s = tricky_scene(n=40, n_cameras=3, width=24, height=16, batch=(2,), sh_degree=sh_degree, seed=7)
    g = torch.Generator().manual_seed(8)
    per_camera = torch.rand(2, 3, *s["colors"].shape[1:], generator=g) - 0.2  # [B, C, N, ...]
    cameras = {k: s[k].clone().requires_grad_(True) for k in ("viewmats", "Ks")}
    per_camera.requires_grad_(True)
    colors, alphas, _ = rasterize(**{**s, **cameras, "colors": per_camera}, backend=backend)
    weights = torch.randn(colors.shape, generator=g)
    (colors * weights).sum().backward()
    for c in range(3):
        alone = per_camera.detach()[:, c].clone().requires_grad_(True)
        one = {k: s[k][:, c : c + 1].clone().requires_grad_(True) for k in ("viewmats", "Ks")}
        want, want_alphas, _ = rasterize(**{**s, **one, "colors": alone}, backend=backend)
        (want * weights[:, c : c + 1]).sum().backward()
        torch.testing.assert_close(colors[:, c : c + 1].detach(), want.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(alphas[:, c : c + 1], want_alphas, rtol=0, atol=1e-6)
        torch.testing.assert_close(per_camera.grad[:, c], alone.grad, rtol=1e-5, atol=1e-6)
        for k, camera in cameras.items():  # sums over the Gaussians, perhaps in another order
            scale = one[k].grad.abs().max().item()
            torch.testing.assert_close(camera.grad[:, c : c + 1], one[k].grad, rtol=1e-5, atol=1e-6 * scale)


def test_per_camera_colors_must_match_the_cameras():
    s = scene()  # 2 cameras, 20 Gaussians
    with pytest.raises(ValueError, match=r"per camera \[\.\.\., C, N, D\]"):
        rasterize(**{**s, "colors": torch.rand(3, 20, 3)}, backend="torch")
