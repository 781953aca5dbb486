"""The C++ CPU rasterizer against the plain-PyTorch reference: outputs, meta and every gradient.

Tolerances (float32, machine epsilon 6e-8): outputs are sums of at most a few hundred blends, but
the two implementations round the projection differently, and for thin footprints the 2D
covariance determinant (s00 s11 - s01^2) cancels, so conics agree to ~1e-4 relative only: 1e-4
absolute on colours and alphas. Projected means near the near plane inherit the cancellation in
the camera-space z, hence rtol 1e-3 on the meta tensors. Gradients are compared relative to the largest entry of
each tensor (rtol 1e-3, atol 1e-4 of that scale): the kernel recovers transmittances back to front
by division, which compounds a few ulps per layer, and sums per-pixel terms in another order.
The camera gradients (viewmats, Ks) sum such per-Gaussian terms over every visible Gaussian, in
another order again, so their differences add up too: about 1e-5 of the largest entry on these
scenes, inside the same tolerance.
Pass decisions must be the reference's exactly, except for an alpha closer to the 1/255 threshold
than the two backends' float32 sigmas differ: `off_threshold` moves such Gaussians' opacities by 1%
first, so each comparison is of decisions both backends can make exactly.
Expected depth (ED) divides by alphas that can be tiny at footprint edges and amplifies those
differences, so its image tolerance is relative as well.
"""

from __future__ import annotations

import math

import pytest
import torch
from render_scenes import dense_scene, tricky_scene

from model.render import rasterize
from model.render.reference import ALPHA_MIN

GRAD_INPUTS = ("means", "quats", "scales", "opacities", "colors", "backgrounds", "viewmats", "Ks")


def render(scene: dict, backend: str, render_mode: str = "RGB", seed: int = 0):
    """Renders with random output cotangents; returns outputs, meta and the gradients."""
    inputs = {k: (v.clone().requires_grad_(True) if k in GRAD_INPUTS else v) for k, v in scene.items()}
    colors, alphas, meta = rasterize(**inputs, render_mode=render_mode, backend=backend)
    g = torch.Generator().manual_seed(seed)
    loss = (colors * torch.randn(colors.shape, generator=g)).sum() + (alphas * torch.randn(alphas.shape, generator=g)).sum()
    loss.backward()
    grads = {k: inputs[k].grad for k in GRAD_INPUTS if k in inputs}
    grads["means2d"] = meta["means2d"].grad
    return colors.detach(), alphas.detach(), meta, grads


def assert_grad_close(name: str, got: torch.Tensor | None, want: torch.Tensor | None) -> None:
    if want is None:  # an input the render mode does not use (colours in "D" mode)
        assert got is None, name
        return
    assert got is not None, name
    scale = want.abs().max().item() + 1e-12
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")


def off_threshold(scene: dict, step: float = 0.99, rounding: float = 1e-5) -> dict:
    """The scene with the opacity of every Gaussian that the two backends could legitimately decide
    differently on lowered by 1% until none is left.

    The backends project in float32 and their conics differ by rounding (compared above with their
    tolerance). Where a (pixel, Gaussian) alpha is closer to the 1/255 threshold than the two sigmas
    differ, one may blend it and the other skip it, which is no error of either: which pairs land
    there depends on the CPU's vector units. Away from those pairs the decisions must agree exactly.
    """
    scene = dict(scene)
    for _ in range(10):
        sigmas = []
        for backend in ("cpu", "torch"):
            _, _, meta = rasterize(**scene, backend=backend)
            h, w = scene["height"], scene["width"]
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            dx = meta["means2d"].detach().double()[..., None, None, 0] - xs.double()  # [..., C, N, H, W]
            dy = meta["means2d"].detach().double()[..., None, None, 1] - ys.double()
            a, b, c = (v[..., None, None] for v in meta["conics"].detach().double().unbind(-1))
            sigmas.append(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy)
        log_o = scene["opacities"].double().log()[..., None, :, None, None]  # [..., 1, N, 1, 1]
        margin = (log_o - sigmas[1] - math.log(ALPHA_MIN)).abs()  # distance of log alpha to the threshold
        visible = (meta["radii"] > 0).any(-1)[..., None, None]  # [..., C, N, 1, 1]
        close = ((margin <= (sigmas[0] - sigmas[1]).abs() + rounding) & visible).flatten(-2).any(-1).any(-2)  # [..., N]
        if not close.any():
            return scene
        scene["opacities"] = torch.where(close, scene["opacities"] * step, scene["opacities"])
    raise RuntimeError("opacities could not be moved off the alpha threshold")


def compare(scene: dict, render_mode: str = "RGB") -> dict:
    scene = off_threshold(scene)
    c_cpu, a_cpu, m_cpu, g_cpu = render(scene, "cpu", render_mode)
    c_ref, a_ref, m_ref, g_ref = render(scene, "torch", render_mode)
    torch.testing.assert_close(a_cpu, a_ref, rtol=0, atol=1e-4)
    if render_mode.endswith("ED"):
        torch.testing.assert_close(c_cpu[..., :-1], c_ref[..., :-1], rtol=0, atol=1e-4)
        torch.testing.assert_close(c_cpu[..., -1], c_ref[..., -1], rtol=1e-3, atol=1e-4)
    else:
        torch.testing.assert_close(c_cpu, c_ref, rtol=0, atol=1e-4)
    assert torch.equal(m_cpu["radii"], m_ref["radii"])
    for key in ("means2d", "depths", "conics"):
        torch.testing.assert_close(m_cpu[key].detach(), m_ref[key].detach(), rtol=1e-3, atol=1e-4)
    assert m_cpu["n_isects"] == m_ref["n_isects"]
    assert m_cpu["n_blends"] == m_ref["n_blends"]
    for name in g_ref:
        assert_grad_close(name, g_cpu[name], g_ref[name])
    return m_cpu


def with_background(scene: dict, channels: int, seed: int = 3) -> dict:
    lead = scene["viewmats"].shape[:-2]
    scene["backgrounds"] = torch.rand(*lead, channels, generator=torch.Generator().manual_seed(seed))
    return scene


@pytest.mark.parametrize("feat_dim", [1, 2, 3, 4, 7])
def test_features(feat_dim):
    # Channel counts 1, 3 and 4 take the kernel's unrolled paths, the others the generic one.
    meta = compare(with_background(tricky_scene(feat_dim=feat_dim, seed=feat_dim), feat_dim))
    radii = meta["radii"]
    assert (radii == 0).any() and (radii > 0).any()  # the scene culls some and keeps some


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_sh_degrees(sh_degree):
    compare(with_background(tricky_scene(sh_degree=sh_degree, seed=10 + sh_degree), 3), "RGB+D")


@pytest.mark.parametrize("render_mode", ["D", "ED", "RGB+ED"])
def test_depth_modes(render_mode):
    compare(tricky_scene(n=200, sh_degree=1, seed=20), render_mode)


def test_batched_scenes_and_cameras():
    scene = with_background(tricky_scene(n=150, n_cameras=3, width=40, height=36, batch=(2,), sh_degree=2, seed=30), 3)
    colors, alphas, meta, _ = render(scene, "cpu")
    assert colors.shape == (2, 3, 36, 40, 3) and alphas.shape == (2, 3, 36, 40, 1)
    assert meta["radii"].shape == (2, 3, 150, 2) and meta["means2d"].shape == (2, 3, 150, 2)
    compare(scene, "RGB+ED")


def test_dense_scene_hits_the_stop_rule():
    scene = dense_scene()
    meta = compare(scene)
    _, alphas, _ = rasterize(**scene, backend="cpu")
    # Pixels that stopped have T just above 1e-4.
    assert (alphas > 0.999).float().mean() > 0.3
    assert alphas.max() < 1 - 1e-4 + 1e-6
    assert meta["n_blends"] > 0


def test_needles_crossing_whole_tiles():
    # Long thin Gaussians at every angle: their boxes span whole tiles, where the kernel trims each
    # row to the ellipse, while smaller ones take their box's columns. The pass decisions must be
    # the reference's exactly (n_blends is compared), whichever way a row was bounded.
    scene = tricky_scene(n=200, width=80, height=64, seed=60)
    g = torch.Generator().manual_seed(61)
    needle = torch.tensor([0.6, 0.004, 0.004]) * (0.5 + torch.rand(200, 1, generator=g))
    scene["scales"] = needle[:, torch.randperm(3, generator=g)]
    scene["means"][:, 2] = 2.0 + 4.0 * torch.rand(200, generator=g)
    meta = compare(scene)
    assert meta["n_blends"] > 1000


def test_same_result_for_any_thread_count():
    # 2000 Gaussians make 8 chunks of the kernels' camera-gradient sums, so threads share the
    # chunks unevenly; the sums must still add up in one fixed order.
    scene = with_background(tricky_scene(n=2000, sh_degree=3, seed=40), 3)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n_threads in (1, 2, 3):
            torch.set_num_threads(n_threads)
            runs.append(render(scene, "cpu", "RGB+D"))
    finally:
        torch.set_num_threads(threads)
    one = runs[0]
    assert one[3]["viewmats"].abs().sum() > 0 and one[3]["Ks"].abs().sum() > 0
    for other in runs[1:]:
        assert torch.equal(one[0], other[0]) and torch.equal(one[1], other[1])
        for name in one[3]:
            assert torch.equal(one[3][name], other[3][name]), name


def test_clamped_gaussians_move_with_the_principal_point():
    # x/z >= 1.2 is beyond the clamp limit (1.15 W - cx) / fx = 0.72: every visible Gaussian has a
    # clamped Jacobian, whose gradient reaches cx through the limit instead of fx through x/z.
    scene = tricky_scene(n=200, seed=70)
    g = torch.Generator().manual_seed(71)
    scene["means"][:, 0] = scene["means"][:, 2].abs() * (1.2 + torch.rand(200, generator=g))
    scene["scales"] = scene["scales"] * 3.0  # wide enough to reach into the image
    meta = compare(scene)
    assert (meta["radii"] > 0).any(-1).sum() > 20


def test_culled_gaussians_get_zero_gradients():
    scene = tricky_scene(seed=50)
    scene["means"][:10, 2] = -2.0  # behind every camera
    _, _, meta, grads = render(scene, "cpu")
    assert (meta["radii"][:, :10] == 0).all()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert (grads[name][:10] == 0).all(), name
