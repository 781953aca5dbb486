import pytest
import torch

from model.gaussians import Gaussians, rgb_to_sh0, sh_degree_for
from model.render.sh import SH_C0


def make(n=50, k=16, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*batch, n, *s, generator=g)  # noqa: E731
    return Gaussians(r(3), r(3), r(4), torch.randn(*batch, n, generator=g), r(k, 3))


def test_activations_closed_form():
    g = make()
    assert torch.allclose(g.scales, torch.exp(g.log_scales))
    assert torch.allclose(g.opacities, 1 / (1 + torch.exp(-g.opacity_logits)))
    assert torch.allclose(g.rotations.norm(dim=-1), torch.ones(50))
    assert torch.allclose(g.rotations, g.quats / g.quats.norm(dim=-1, keepdim=True))
    assert g.sh_degree == 3


def test_rgb_to_sh0_renders_back_to_rgb():
    rgb = torch.rand(10, 3)
    assert torch.allclose(SH_C0 * rgb_to_sh0(rgb) + 0.5, rgb, atol=1e-6)


def test_sh_degree_validation():
    assert [sh_degree_for(k) for k in (1, 4, 9, 16)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="degree 0-3"):
        sh_degree_for(5)
    with pytest.raises(ValueError, match="degree 0-3"):
        sh_degree_for(25)


def test_prune_by_threshold_matches_manual_selection():
    g = make()
    pruned = g.prune(min_opacity=0.6)
    keep = torch.sigmoid(g.opacity_logits) > 0.6
    assert torch.equal(pruned.means, g.means[keep])
    assert torch.equal(pruned.sh, g.sh[keep])


def test_prune_by_keep_ratio_keeps_the_most_opaque_by_decreasing_opacity():
    g = make(n=40)
    pruned = g.prune(keep_ratio=0.25)
    assert pruned.count == 10
    order = torch.argsort(g.opacity_logits, descending=True)[:10]
    assert torch.equal(pruned.means, g.means[order])
    both = g.prune(min_opacity=0.9, keep_ratio=0.5)
    assert both.count == min(20, int((g.opacities > 0.9).sum()))


def test_official_keep_rule_top_36_percent_then_seeded_random_4_percent():
    """Counts and draw as written in the official forward: int(N * 0.36) by opacity, then
    int(N * 0.04) of the rest picked by torch.randperm after torch.manual_seed(seed)."""
    n = 1037
    g = make(n=n, seed=4)
    pruned = g.prune(keep_ratio=1 - 0.6, random_ratio=0.1, seed=7)
    n_top, n_random = int(n * (0.4 - 0.4 * 0.1)), int(n * 0.4 * 0.1)
    assert (n_top, n_random) == (373, 41) and pruned.count == n_top + n_random
    order = torch.sort(g.opacity_logits, descending=True).indices
    torch.manual_seed(7)
    expected = torch.cat([order[:n_top], order[n_top:][torch.randperm(n - n_top)[:n_random]]])
    assert torch.equal(pruned.means, g.means[expected])
    assert torch.equal(g.prune(keep_ratio=0.4, random_ratio=0.1, seed=7).quats, pruned.quats)  # deterministic
    assert not torch.equal(g.prune(keep_ratio=0.4, random_ratio=0.1, seed=8).means, pruned.means)


def test_batch_cat_stack_scene_index():
    a, b = make(seed=1), make(seed=2)
    stacked = Gaussians.stack([a, b])
    assert stacked.means.shape == (2, 50, 3)
    assert torch.equal(stacked.scene(1).sh, b.sh)
    joined = Gaussians.cat([a, b])
    assert joined.count == 100 and torch.equal(joined.opacity_logits[50:], b.opacity_logits)
    batched = Gaussians.cat([make(batch=(2,)), make(batch=(2,), seed=3)])
    assert batched.means.shape == (2, 100, 3) and batched.sh.shape == (2, 100, 16, 3)
    assert a.index(torch.tensor([3, 1])).means.shape == (2, 3)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="quats"):
        Gaussians(torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5), torch.zeros(5, 1, 3))
    with pytest.raises(ValueError, match="sh"):
        Gaussians(torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="different Gaussian counts"):
        Gaussians.stack([make(n=3), make(n=4)])
    with pytest.raises(ValueError, match="keep_ratio"):
        make().prune(keep_ratio=1.5)
