import math

import torch

from model.gaussians import Gaussians
from model.rotations import quat_to_matrix
from refine.config import RefineConfig
from refine.densify import GradStats, densify_and_prune, split
from refine.params import GaussianParams, build_optimizer

EXTENT = 10.0  # percent_dense * extent = 0.1: the clone/split boundary on the largest scale


def gaussians(log_scales, quats, opacity=0.9):
    n = len(log_scales)
    g = torch.Generator().manual_seed(0)
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        log_scales=torch.tensor(log_scales, dtype=torch.float32),
        quats=torch.tensor(quats, dtype=torch.float32),
        opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh=torch.randn(n, 4, 3, generator=g),
    )


def stats_with(mean_grads, radius=5.0):
    stats = GradStats(len(mean_grads))
    stats.grad_norm = torch.tensor(mean_grads) * 4
    stats.views = torch.full((len(mean_grads),), 4.0)
    stats.max_radius = torch.full((len(mean_grads),), radius)
    return stats


def test_gradient_stats_use_ndc_scale_and_visible_views():
    stats = GradStats(3)
    grad = torch.tensor([[[1e-4, 0.0], [0.0, 2e-4], [1.0, 1.0]]])  # [C=1, N=3, 2] pixels
    radii = torch.tensor([[[3, 2], [4, 4], [0, 0]]])  # third not visible
    stats.add(grad, radii, width=64, height=48)
    stats.add(grad * 3, radii, width=64, height=48)
    # dL/dndc = dL/dpix * (W/2, H/2): 1e-4 * 32 and 2e-4 * 24, averaged over (1x, 3x) -> 2x
    assert torch.allclose(stats.mean_grad(), torch.tensor([2 * 32e-4, 2 * 48e-4, 0.0]))
    assert torch.equal(stats.views, torch.tensor([2.0, 2.0, 0.0]))
    assert torch.equal(stats.max_radius, torch.tensor([3.0, 4.0, 0.0]))


def test_small_is_cloned_large_is_split_low_gradient_untouched():
    q_big = torch.nn.functional.normalize(torch.tensor([0.9, 0.3, -0.2, 0.25]), dim=0).tolist()
    g = gaussians(
        log_scales=[[math.log(0.05)] * 3, [math.log(0.6), math.log(0.2), math.log(0.1)], [math.log(0.5)] * 3],
        quats=[[1.0, 0, 0, 0], q_big, [1.0, 0, 0, 0]],
    )
    params = GaussianParams(g)
    opt = build_optimizer(params, RefineConfig(), 1.0)
    cfg = RefineConfig()
    counts = densify_and_prune(params, opt, stats_with([3e-4, 5e-4, 1e-4]), cfg, EXTENT, step=1000,
                                generator=torch.Generator().manual_seed(0))
    assert counts == {"cloned": 1, "split": 1, "pruned": 0, "before": 3, "after": 5}
    # rows: small original, low-gradient original, clone of the small one, two children of the large one
    out = params.gaussians().detach()
    for field in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(out, field)[0], getattr(g, field)[0])
        assert torch.equal(getattr(out, field)[1], getattr(g, field)[2])
        assert torch.equal(getattr(out, field)[2], getattr(g, field)[0])  # the clone is an exact copy
    for child in (3, 4):
        assert torch.allclose(params.scaling[child].exp(), g.scales[1] / 1.6, rtol=1e-6)
        assert torch.equal(params.rotation[child], g.quats[1])
        assert torch.equal(params.opacity[child], g.opacity_logits[1])
        assert torch.equal(params.f_dc[child], g.sh[1, :1])
        local = quat_to_matrix(g.quats[1]).T @ (params.xyz[child].detach() - g.means[1])
        assert (local.abs() <= 4 * g.scales[1]).all()  # within the parent's 4-sigma ellipsoid
    assert not torch.allclose(params.xyz[3], params.xyz[4])


def test_split_children_follow_the_rotated_parent_distribution():
    # Many copies of one anisotropic, rotated Gaussian: in the parent's frame the children's offsets must
    # have zero mean and per-axis standard deviations equal to the parent's scales.
    q = torch.nn.functional.normalize(torch.tensor([0.6, 0.5, 0.1, -0.6]), dim=0)
    scales = torch.tensor([0.8, 0.2, 0.05])
    n = 4000
    g = Gaussians(means=torch.tensor([1.0, -2.0, 3.0]).repeat(n, 1), log_scales=scales.log().repeat(n, 1),
                  quats=q.repeat(n, 1), opacity_logits=torch.zeros(n), sh=torch.zeros(n, 1, 3))
    params = GaussianParams(g)
    opt = build_optimizer(params, RefineConfig(), 1.0)
    split(params, opt, torch.ones(n, dtype=torch.bool), torch.Generator().manual_seed(3))
    assert params.count == 2 * n
    local = (params.xyz.detach() - g.means[0]) @ quat_to_matrix(q)  # rows R^T (x - mu)
    assert local.mean(0).abs().max() < 0.03
    assert torch.allclose(local.std(0), scales, rtol=0.05)
    world_std = (params.xyz.detach() - g.means[0]).std(0)
    assert not torch.allclose(world_std, scales, rtol=0.2)  # the rotation matters for this quaternion


def test_prune_rules():
    g = gaussians(
        log_scales=[[math.log(0.05)] * 3, [math.log(0.05)] * 3, [math.log(2.0)] * 3, [math.log(0.05)] * 3],
        quats=[[1.0, 0, 0, 0]] * 4,
    )
    g.opacity_logits[1] = math.log(0.004 / 0.996)  # below min_opacity 0.005
    cfg = RefineConfig()
    stats = stats_with([0.0] * 4)
    stats.max_radius[3] = 50.0  # larger than max_screen_size 20 px
    params = GaussianParams(g)
    opt = build_optimizer(params, cfg, 1.0)
    early = densify_and_prune(params, opt, stats, cfg, EXTENT, step=1000)
    assert early["pruned"] == 1 and params.count == 3  # only the transparent one before the reset period
    params = GaussianParams(g)
    opt = build_optimizer(params, cfg, 1.0)
    late = densify_and_prune(params, opt, stats, cfg, EXTENT, step=3100)
    assert late["pruned"] == 3 and params.count == 1  # then also world size > 0.1 extent and screen size
    assert torch.equal(params.xyz[0], g.means[0])
