"""Training-time pruning counts and choices, and the per-view checkpointed target renderer."""

import pytest
import torch

from model.cameras import Cameras
from model.gaussians import Gaussians
from train.prune import prune_counts, prune_for_training, prune_indices


def random_gaussians(b: int, n: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(b, n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 2.0])
    return Gaussians(means, torch.full((b, n, 3), -2.5), torch.randn(b, n, 4, generator=g),
                     torch.randn(b, n, generator=g), torch.randn(b, n, 4, 3, generator=g) * 0.5)


def test_official_ratios_keep_36_plus_4_percent():
    assert prune_counts(1000, 0.6, 0.1) == (360, 40)
    assert prune_counts(1000, 0.0, 0.0) == (1000, 0)


def test_prune_keeps_the_most_opaque_and_random_others():
    opacities = torch.rand(2, 1000, generator=torch.Generator().manual_seed(1))
    idx = prune_indices(opacities, 0.6, 0.1)  # [2, 400]
    assert idx.shape == (2, 400)
    for b in range(2):
        assert len(set(idx[b].tolist())) == 400  # no Gaussian twice
        top = set(opacities[b].topk(360).indices.tolist())
        assert set(idx[b, :360].tolist()) == top
        assert not set(idx[b, 360:].tolist()) & top
    torch.manual_seed(0)
    first = prune_indices(opacities, 0.6, 0.1)[:, 360:]
    second = prune_indices(opacities, 0.6, 0.1)[:, 360:]
    assert not torch.equal(first, second)  # the random part is redrawn every step


def test_pruned_gaussians_carry_gradients():
    g = random_gaussians(2, 100)
    g.means.requires_grad_(True)
    kept = prune_for_training(g, 0.6, 0.1)
    assert kept.means.shape == (2, 40, 3) and kept.sh.shape == (2, 40, 4, 3)
    kept.means.sum().backward()
    assert int((g.means.grad != 0).any(-1).sum()) == 80


def cameras(b: int, t: int, size: int = 16) -> Cameras:
    intrinsics = torch.tensor([20.0, 20.0, size / 2, size / 2]).expand(b, t, 4)
    c2w = torch.eye(4).expand(b, t, 4, 4).clone()
    c2w[..., 0, 3] = torch.linspace(-0.1, 0.1, t)
    return Cameras(intrinsics, c2w, size, size)


def test_render_checkpointing_changes_nothing_but_memory():
    cams = cameras(2, 3)
    grads = []
    for checkpointed in (True, False):
        g = random_gaussians(2, 64)
        g.sh.requires_grad_(True)
        g.means.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # rendering must ignore autocast
            images = g.render(cams, checkpoint_views=checkpointed)
        assert images.shape == (2, 3, 16, 16, 3) and images.dtype == torch.float32
        (images * torch.linspace(0, 1, 16)[:, None]).sum().backward()
        grads.append((images.detach(), g.sh.grad, g.means.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_background_is_white():
    g = random_gaussians(1, 8)
    g.means.data[..., 2] = -5.0  # all behind the camera
    images = g.render(cameras(1, 2))
    assert torch.equal(images, torch.ones_like(images))


def test_one_scene_renders_as_its_row_of_a_batch():
    g, cams = random_gaussians(2, 64), cameras(2, 3)
    batched = g.render(cams)  # [2, 3, H, W, 3]
    for b in range(2):
        torch.testing.assert_close(g.scene(b).render(cams[b]), batched[b], rtol=0, atol=0)
    with pytest.raises(ValueError, match="leading dims"):
        g.scene(0).render(cams)
