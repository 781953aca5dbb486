import math

import numpy as np
import pytest
import torch

from model.lpips import LPIPS
from model.metrics import lpips, psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def structured_image(seed: int, height=48, width=56) -> np.ndarray:
    """Smooth pattern + edges + mild noise, float64 [H, W, 3] in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rng = np.random.default_rng(seed)
    phase = rng.random(3) * 2 * np.pi
    im = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (3 * x + 2 * y) + p) for p in phase], axis=-1)
    im[(x > 0.3) & (y < 0.5)] *= 0.5
    return np.clip(im + 0.03 * rng.standard_normal(im.shape), 0, 1)


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return skimage_metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                 data_range=1.0, channel_axis=-1)


def test_psnr_closed_form():
    x = torch.full((2, 3, 8, 8, 3), 0.5)
    y = x.clone()
    y[..., 0] += 0.1  # mse = 0.01 / 3
    assert psnr(x, y).shape == (2, 3)
    assert torch.allclose(psnr(x, y), torch.tensor(10 * math.log10(300.0)), atol=1e-4)
    # Clamped: values outside [0, 1] count as their clamped values.
    assert torch.allclose(psnr(torch.full((4, 4, 3), 1.5), torch.full((4, 4, 3), 0.9)), torch.tensor(20.0), atol=1e-4)


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_matches_skimage(kind, dtype):
    rng = np.random.default_rng(1)
    if kind == "random":
        a = [rng.random((40, 52, 3)) for _ in range(3)]
        b = [np.clip(im + s * rng.standard_normal(im.shape), 0, 1) for im, s in zip(a, (0.02, 0.1, 0.4))]
    else:
        a = [structured_image(i, 40, 52) for i in range(3)]
        b = [structured_image(i + 10, 40, 52) if i == 2 else np.roll(im, i + 1, axis=1) for i, im in enumerate(a)]
    expected = torch.tensor([skimage_ssim(p, t) for p, t in zip(a, b)], dtype=dtype)
    got = ssim(torch.tensor(np.stack(a), dtype=dtype), torch.tensor(np.stack(b), dtype=dtype))
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)


def test_ssim_identity_and_leading_dims():
    x = torch.tensor(np.stack([structured_image(i) for i in range(4)])).reshape(2, 2, 48, 56, 3)
    assert ssim(x, x).shape == (2, 2)
    assert torch.allclose(ssim(x, x), torch.ones(2, 2, dtype=x.dtype))
    assert ssim(x[0, 0], x[1, 1]).shape == ()


def test_lpips_metric_shapes_and_chunks():
    torch.manual_seed(0)
    net = LPIPS().eval()
    for lin in net.lins:
        lin.weight.data.abs_()
    x, y = torch.rand(2, 2, 16, 16, 3), torch.rand(2, 2, 16, 16, 3)
    whole = lpips(x, y, net=net, chunk=4)
    assert whole.shape == (2, 2)
    assert torch.allclose(lpips(x, y, net=net, chunk=3), whole, atol=1e-6)
    assert torch.allclose(lpips(x + 1, y, net=net), lpips(torch.ones_like(x), y, net=net), atol=1e-6)  # clamped
