import math

import torch

from model.gaussians import Gaussians
from refine.config import RefineConfig
from refine.densify import clone, reset_opacity, split
from refine.params import GROUPS, GaussianParams, build_optimizer
from refine.surgery import keep


def make_trained(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    gaussians = Gaussians(
        means=torch.randn(n, 3, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 2,
        quats=torch.randn(n, 4, generator=g),
        opacity_logits=torch.randn(n, generator=g),
        sh=torch.randn(n, 16, 3, generator=g),
    )
    params = GaussianParams(gaussians)
    opt = build_optimizer(params, RefineConfig(), lr_scale=1.0)
    for _ in range(3):  # a few steps with random gradients: distinct non-zero moments per row
        for name in GROUPS:
            p = getattr(params, name)
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        opt.zero_grad()
    return params, opt


def snapshot(params, opt):
    """Map each Gaussian (identified by its exact position) to its parameters and moments per group."""
    table = {}
    for i in range(params.count):
        key = tuple(params.xyz[i].tolist())
        table[key] = {
            name: (getattr(params, name)[i].detach().clone(),
                   opt.state[getattr(params, name)]["exp_avg"][i].clone(),
                   opt.state[getattr(params, name)]["exp_avg_sq"][i].clone())
            for name in GROUPS
        }
    return table


def moments(params, opt, i):
    return {name: (opt.state[getattr(params, name)]["exp_avg"][i], opt.state[getattr(params, name)]["exp_avg_sq"][i])
            for name in GROUPS}


def assert_aligned(params, opt):
    names = [g["name"] for g in opt.param_groups]
    assert names == list(GROUPS)
    for g in opt.param_groups:
        assert len(g["params"]) == 1
        p = g["params"][0]
        assert p is getattr(params, g["name"])
        assert p.shape[0] == params.count
        assert opt.state[p]["exp_avg"].shape == p.shape
        assert opt.state[p]["exp_avg_sq"].shape == p.shape
    assert {id(p) for p in params.parameters()} == {id(g["params"][0]) for g in opt.param_groups}


def assert_survivor_kept(params, opt, table, i):
    key = tuple(params.xyz[i].tolist())
    for name, (value, m1, m2) in table[key].items():
        assert torch.equal(getattr(params, name)[i], value)
        assert torch.equal(opt.state[getattr(params, name)]["exp_avg"][i], m1)
        assert torch.equal(opt.state[getattr(params, name)]["exp_avg_sq"][i], m2)


def assert_fresh(params, opt, i):
    for m1, m2 in moments(params, opt, i).values():
        assert not m1.any() and not m2.any()


def test_clone_split_prune_keep_survivor_moments():
    params, opt = make_trained()
    n = params.count
    table = snapshot(params, opt)
    assert all(m[1].abs().sum() > 0 for row in table.values() for m in row.values())

    to_clone = torch.zeros(n, dtype=torch.bool)
    to_clone[[2, 5, 11]] = True
    clone(params, opt, to_clone)
    assert params.count == n + 3
    assert_aligned(params, opt)
    for i in range(n):
        assert_survivor_kept(params, opt, table, i)
    for j, src in zip(range(n, n + 3), [2, 5, 11]):
        for name in GROUPS:  # an exact copy of its source ...
            assert torch.equal(getattr(params, name)[j], getattr(params, name)[src])
        assert_fresh(params, opt, j)  # ... whose moments start at zero

    m = params.count
    to_split = torch.zeros(m, dtype=torch.bool)
    to_split[[0, 7, m - 1]] = True  # includes a fresh clone
    split(params, opt, to_split, torch.Generator().manual_seed(1))
    assert params.count == m - 3 + 6
    assert_aligned(params, opt)
    survivors = m - 3
    for i in range(survivors):
        key = tuple(params.xyz[i].tolist())
        if i < n - 2:  # original Gaussians (0 and 7 left) keep their moments
            assert_survivor_kept(params, opt, table, i)
        else:  # the two unsplit clones still have zero moments
            assert key in table
            assert_fresh(params, opt, i)
    for j in range(survivors, params.count):
        assert_fresh(params, opt, j)

    to_keep = torch.ones(params.count, dtype=torch.bool)
    to_keep[[1, 3, params.count - 2]] = False
    before = params.count
    keep(params, opt, to_keep)
    assert params.count == before - 3
    assert_aligned(params, opt)
    for i in range(n - 2 - 2):
        assert_survivor_kept(params, opt, table, i)

    # the optimizer still steps with the new shapes, and the step count survived the surgery
    for name in GROUPS:
        getattr(params, name).grad = torch.ones_like(getattr(params, name))
    opt.step()
    assert all(int(opt.state[g["params"][0]]["step"]) == 4 for g in opt.param_groups)


def test_opacity_reset_zeroes_only_opacity_moments():
    params, opt = make_trained()
    table = snapshot(params, opt)
    old = params.opacity.detach().clone()
    reset_opacity(params, opt, 0.01)
    assert_aligned(params, opt)
    expected = torch.minimum(torch.sigmoid(old), torch.tensor(0.01))
    assert torch.allclose(torch.sigmoid(params.opacity), expected, rtol=1e-5)
    assert not opt.state[params.opacity]["exp_avg"].any()
    assert not opt.state[params.opacity]["exp_avg_sq"].any()
    for i in range(params.count):
        row = table[tuple(params.xyz[i].tolist())]
        for name in GROUPS:
            if name != "opacity":
                assert torch.equal(opt.state[getattr(params, name)]["exp_avg"][i], row[name][1])
    assert math.isclose(float(torch.sigmoid(params.opacity.detach()).max()), 0.01, rel_tol=1e-5)
