"""The plain-PyTorch renderer (the oracle of the C++ kernel) against closed forms and finite
differences, plus the same closed forms on the C++ backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from render_scenes import look_cameras

from model.render import rasterize
from model.render.sh import sh_basis

BACKENDS = ["torch", "cpu"]


def one_camera(width: int, height: int, f: float, dtype=torch.float32):
    # cx, cy on a pixel centre so the pixel under the optical axis sees the Gaussian's peak.
    K = torch.tensor([[f, 0.0, width // 2 + 0.5], [0.0, f, height // 2 + 0.5], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K[None]


def on_axis(z: list[float], scale: float, opacity: float, colors: list[list[float]], dtype=torch.float32) -> dict:
    n = len(z)
    return {
        "means": torch.tensor([[0.0, 0.0, zi] for zi in z], dtype=dtype),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n, dtype=dtype),
        "scales": torch.full((n, 3), scale, dtype=dtype),
        "opacities": torch.full((n,), opacity, dtype=dtype),
        "colors": torch.tensor(colors, dtype=dtype),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_isotropic_gaussian_matches_closed_form(backend):
    W, H, f, z, s, o, eps2d = 40, 32, 50.0, 4.0, 0.2, 0.8, 0.3
    viewmats, Ks = one_camera(W, H, f)
    img, alpha, meta = rasterize(**on_axis([z], s, o, [[1.0, 1.0, 1.0]]), viewmats=viewmats, Ks=Ks,
                                 width=W, height=H, eps2d=eps2d, backend=backend)  # fmt: skip
    s2 = (f * s / z) ** 2 + eps2d  # projected variance in pixels^2
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    r2 = (xs - (W // 2 + 0.5)) ** 2 + (ys - (H // 2 + 0.5)) ** 2
    want = o * torch.exp(-r2 / (2 * s2))
    want = torch.where(want >= 1 / 255, want, torch.zeros_like(want))  # alphas below 1/255 are skipped
    torch.testing.assert_close(alpha[0, ..., 0], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(img[0], want[..., None].expand(H, W, 3), rtol=1e-5, atol=1e-6)
    # Opacity-aware radius: ceil(sqrt(2 ln(255 o)) sigma).
    r = math.ceil(math.sqrt(2 * math.log(255 * o)) * math.sqrt(s2))
    assert meta["radii"][0, 0].tolist() == [r, r]
    torch.testing.assert_close(meta["depths"][0], torch.tensor([z]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_rule_excludes_the_gaussian_that_would_end_the_pixel(backend):
    # Four stacked Gaussians with alpha 0.95 at the centre pixel: T goes 1, 0.05, 2.5e-3, 1.25e-4;
    # the fourth would take it to 6.25e-6 <= 1e-4, so it and everything behind are left out.
    W = H = 16
    viewmats, Ks = one_camera(W, H, 40.0)
    colors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    img, alpha, _ = rasterize(**on_axis([2.0, 3.0, 4.0, 5.0], 0.5, 0.95, colors), viewmats=viewmats, Ks=Ks,
                              width=W, height=H, backgrounds=torch.tensor([[0.0, 0.0, 10.0]]), backend=backend)  # fmt: skip
    centre = img[0, H // 2, W // 2]
    T = [1.0, 0.05, 0.0025]
    want = torch.tensor([0.95 * T[0], 0.95 * T[1], 0.95 * T[2] + 10.0 * 0.05**3])
    torch.testing.assert_close(centre, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(alpha[0, H // 2, W // 2, 0], torch.tensor(1 - 0.05**3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expected_depth_of_an_opaque_gaussian_is_its_z(backend):
    W, H, z = 32, 24, 3.0
    viewmats, Ks = one_camera(W, H, 30.0)
    scene = on_axis([z], 2.0, 0.99, [[0.2, 0.4, 0.6]])
    ed, alpha, _ = rasterize(**scene, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="ED", backend=backend)
    d, _, _ = rasterize(**scene, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="D", backend=backend)
    torch.testing.assert_close(ed[0, H // 2, W // 2, 0], torch.tensor(z), rtol=1e-6, atol=0)
    torch.testing.assert_close(ed[alpha > 0], torch.full_like(ed[alpha > 0], z), rtol=1e-5, atol=0)
    torch.testing.assert_close(d, z * alpha, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [0, 5])
def test_empty_scene_renders_the_background(backend, n):
    # n = 0: no Gaussians at all; n = 5: all behind the camera.
    viewmats, Ks = look_cameras(2, 24, 20)
    scene = {
        "means": torch.tensor([[0.0, 0.0, -3.0]]).repeat(n, 1),
        "quats": torch.randn(n, 4),
        "scales": torch.full((n, 3), 0.5),
        "opacities": torch.full((n,), 0.9),
        "colors": torch.rand(n, 3),
    }
    bg = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.5, 0.0]])
    img, alpha, meta = rasterize(**scene, viewmats=viewmats, Ks=Ks, width=24, height=20, backgrounds=bg, backend=backend)
    torch.testing.assert_close(img, bg[:, None, None, :].expand(2, 20, 24, 3))
    assert (alpha == 0).all() and (meta["radii"] == 0).all()


def gradcheck_scene(seed: int) -> dict:
    """Three float64 Gaussians with footprints much larger than the 12x10 image of two cameras: every
    pair stays above 1/255 and T above 1e-4, so no skip or stop threshold lies within the
    finite-difference step."""
    dtype = torch.float64
    viewmats, Ks = look_cameras(2, 12, 10, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    return {
        "means": torch.tensor([[0.1, -0.1, 3.0], [-0.2, 0.1, 4.0], [0.0, 0.2, 5.0]], dtype=dtype),
        "quats": torch.randn(3, 4, generator=g, dtype=dtype),
        "scales": torch.tensor([[0.8, 0.5, 0.6], [0.6, 0.9, 0.4], [1.0, 0.7, 0.8]], dtype=dtype),
        "opacities": torch.tensor([0.4, 0.5, 0.6], dtype=dtype),
        "colors": torch.randn(3, 9, 3, generator=g, dtype=dtype) * 0.3,
        "viewmats": viewmats,
        "Ks": Ks,
        "backgrounds": torch.rand(2, 3, generator=g, dtype=dtype),
    }


def gradcheck_wrt(scene: dict, names: list[str], render_mode: str) -> bool:
    """torch.autograd.gradcheck of the torch backend's image and alpha w.r.t. scene[names]."""
    def f(*tensors):
        img, alpha, _ = rasterize(**{**scene, **dict(zip(names, tensors))}, width=12, height=10, sh_degree=2,
                                  render_mode=render_mode, backend="torch")  # fmt: skip
        return img, alpha

    inputs = [scene[n].clone().requires_grad_(True) for n in names]
    # fast_mode checks random projections of the Jacobian, which keeps this to seconds.
    return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_reference_gradcheck_float64():
    names = ["means", "quats", "scales", "opacities", "colors", "backgrounds"]
    assert gradcheck_wrt(gradcheck_scene(5), names, "RGB+ED")


def test_reference_camera_gradcheck_float64():
    # The torch backend differentiates the cameras too: viewmats (all 16 entries, as gsplat) and Ks.
    assert gradcheck_wrt(gradcheck_scene(6), ["viewmats", "Ks"], "RGB+D")


@pytest.mark.parametrize("backend", BACKENDS)
def test_camera_gradients_mirror_the_gaussians(backend):
    # With R = I the camera-space mean is m + t, so t gets exactly the mean's gradient; the 2D mean
    # is f x/z + cx, so (cx, cy) get exactly the screen-space gradient (the Jacobian does not
    # depend on them away from the clamp). Entries the projection never reads get zero.
    viewmats, Ks = (t.clone().requires_grad_(True) for t in one_camera(16, 16, 20.0))
    scene = on_axis([3.0], 0.3, 0.7, [[1.0, 1.0, 1.0]])
    scene["means"] = torch.tensor([[0.2, -0.1, 3.0]], requires_grad=True)
    img, _, meta = rasterize(**scene, viewmats=viewmats, Ks=Ks, width=16, height=16, backend=backend)
    (img * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert scene["means"].grad.abs().min() > 0
    torch.testing.assert_close(viewmats.grad[0, :3, 3], scene["means"].grad[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(Ks.grad[0, :2, 2], meta["means2d"].grad[0, 0], rtol=1e-5, atol=0)
    assert (viewmats.grad[0, 3] == 0).all() and (Ks.grad[0, 2] == 0).all()
    assert Ks.grad[0, 0, 1] == 0 and Ks.grad[0, 1, 0] == 0


def test_means2d_receives_the_screen_space_gradient():
    viewmats, Ks = one_camera(16, 16, 20.0)
    scene = on_axis([3.0], 0.3, 0.7, [[1.0, 1.0, 1.0]])
    scene["means"] = scene["means"].requires_grad_(True)
    img, _, meta = rasterize(**scene, viewmats=viewmats, Ks=Ks, width=16, height=16, backend="torch")
    # Weight the right half of the image: moving the splat right (+x pixels) increases the loss.
    img[..., :, 8:, :].sum().backward()
    g = meta["means2d"].grad  # [1, 1, 2]
    assert g is not None and g[0, 0, 0] > 0 and abs(g[0, 0, 1]) < 1e-4 * abs(g[0, 0, 0])
    # Chain rule to the world: d pixel_x / d x = f / z.
    torch.testing.assert_close(scene["means"].grad[0, 0], g[0, 0, 0] * 20.0 / 3.0, rtol=1e-4, atol=0)


# --- spherical harmonics ---------------------------------------------------------------------


def closed_form_basis(x, y, z):
    """The 16 real SH in graphdeco order and signs, from the textbook normalisations."""
    pi = math.pi
    return [
        0.5 * math.sqrt(1 / pi) + 0 * x,
        -math.sqrt(3 / (4 * pi)) * y,
        math.sqrt(3 / (4 * pi)) * z,
        -math.sqrt(3 / (4 * pi)) * x,
        0.5 * math.sqrt(15 / pi) * x * y,
        -0.5 * math.sqrt(15 / pi) * y * z,
        0.25 * math.sqrt(5 / pi) * (3 * z * z - 1),
        -0.5 * math.sqrt(15 / pi) * x * z,
        0.25 * math.sqrt(15 / pi) * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * pi)) * y * (3 * x * x - y * y),
        0.5 * math.sqrt(105 / pi) * x * y * z,
        -0.25 * math.sqrt(21 / (2 * pi)) * y * (5 * z * z - 1),
        0.25 * math.sqrt(7 / pi) * z * (5 * z * z - 3),
        -0.25 * math.sqrt(21 / (2 * pi)) * x * (5 * z * z - 1),
        0.25 * math.sqrt(105 / pi) * z * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * pi)) * x * (x * x - 3 * y * y),
    ]


def test_sh_basis_matches_closed_forms():
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    got = sh_basis(dirs, 3)
    want = torch.stack(closed_form_basis(*dirs.unbind(-1)), -1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    x, y, z = dirs.unbind(-1)
    torch.testing.assert_close(sh_basis(dirs, 1)[:, 1:], 0.4886025 * torch.stack([-y, z, -x], -1), rtol=1e-6, atol=0)


def test_sh_basis_is_orthonormal_on_the_sphere():
    # Gauss-Legendre in cos(theta) x uniform phi integrates these degree <= 6 products exactly.
    nodes, weights = np.polynomial.legendre.leggauss(8)
    phi = np.arange(16) * 2 * np.pi / 16
    z = torch.tensor(np.repeat(nodes, 16))
    w = torch.tensor(np.repeat(weights, 16) * 2 * np.pi / 16)
    rho = torch.sqrt(1 - z * z)
    p = torch.tensor(np.tile(phi, 8))
    dirs = torch.stack([rho * torch.cos(p), rho * torch.sin(p), z], -1)
    basis = sh_basis(dirs, 3)  # [128, 16]
    gram = basis.T @ (basis * w[:, None])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sh_colour_convention(backend):
    # Degree 0 renders 0.5 + C0 * c (clamped at 0), independent of the view.
    W = H = 16
    viewmats, Ks = one_camera(W, H, 20.0)
    scene = on_axis([3.0], 3.0, 0.999, [[0.0]])
    scene["colors"] = torch.tensor([[[1.0, -1.0, -3.0]]])  # [N, K=1, 3]
    img, alpha, _ = rasterize(**scene, viewmats=viewmats, Ks=Ks, width=W, height=H, sh_degree=0, backend=backend)
    c0 = 0.5 * math.sqrt(1 / math.pi)
    want = torch.tensor([0.5 + c0, 0.5 - c0, 0.0]) * alpha[0, H // 2, W // 2]
    torch.testing.assert_close(img[0, H // 2, W // 2], want, rtol=1e-5, atol=1e-7)
