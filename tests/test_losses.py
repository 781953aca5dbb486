import pytest
import torch

import model.losses as losses_module
from model.depth_prior import DepthPrior, load_depth_prior
from model.lpips import LPIPS
from model.losses import LossConfig, Losses, depth_loss, normalize_disparity, opacity_loss, perceptual_loss


def tiny_depth_anything(**overrides):
    """A randomly initialised Depth Anything small enough to run offline in a test."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, **overrides)
    torch.manual_seed(0)
    return DepthAnythingForDepthEstimation(config)


@pytest.fixture(scope="module")
def random_lpips() -> LPIPS:
    torch.manual_seed(0)
    net = LPIPS().eval().requires_grad_(False)
    for lin in net.lins:
        lin.weight.abs_()
    return net


def positive_prior(shape=(2, 3, 20, 24), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) + 0.1


def test_depth_loss_invariant_to_affine_prior():
    prior = positive_prior()
    z = 1.0 / positive_prior(seed=1)
    base = depth_loss(z, prior)
    assert base > 0
    for a, b in [(3.0, 0.0), (0.5, 5.0), (250.0, -0.05)]:  # scales where the 1e-6 guard is negligible
        assert torch.allclose(depth_loss(z, a * prior + b), base, rtol=1e-5, atol=1e-8)


def test_depth_loss_zero_for_affine_disparity_and_scale_of_z():
    prior = positive_prior()
    z = 1.0 / (0.7 * prior + 0.2)  # disparity is an affine function of the prior
    assert depth_loss(z, prior) < 1e-8  # only the 1e-6 guard in the normaliser remains
    assert depth_loss(4.0 * z, 2.0 * prior - 0.05) < 1e-8  # global scale of the scene does not matter


def test_depth_loss_gradient_finite_and_prior_detached():
    prior = positive_prior().float().requires_grad_()
    z = (torch.randn(2, 3, 20, 24) * 2).requires_grad_()  # includes z <= 0, clamped
    depth_loss(z, prior).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert prior.grad is None


def test_depth_loss_resizes_prior_and_normalises_per_view():
    prior = positive_prior((1, 2, 40, 48))
    z = 1.0 / positive_prior((1, 2, 20, 24), seed=3)
    assert torch.isfinite(depth_loss(z, prior))
    d = positive_prior((1, 2, 4, 4))
    scaled = d.clone()
    scaled[:, 1] = 10 * scaled[:, 1] + 3  # a different affine map per view
    assert torch.allclose(normalize_disparity(scaled), normalize_disparity(d), atol=1e-5)


def test_opacity_loss_is_mean():
    o = torch.tensor([[0.1, 0.5], [0.9, 0.3]])
    assert torch.isclose(opacity_loss(o), torch.tensor(0.45))


def test_perceptual_loss_chunks_agree_and_backprop(random_lpips):
    pred = torch.rand(1, 3, 16, 16, 3, requires_grad=True)
    target = torch.rand(1, 3, 16, 16, 3)
    whole = perceptual_loss(random_lpips, pred, target, chunk=3)
    chunked = perceptual_loss(random_lpips, pred, target, chunk=2)
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(whole, random_lpips(pred, target).mean(), atol=1e-6)
    chunked.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_disabled_terms_load_nothing():
    losses = Losses(LossConfig(perceptual=0, depth=0))
    assert losses.lpips_net is None and losses.depth_prior is None
    rendered, target = torch.rand(1, 2, 16, 16, 3), torch.rand(1, 2, 16, 16, 3)
    opacities = torch.rand(1, 100)
    total, details = losses(rendered, target, opacities)
    assert set(details) == {"mse", "opacity", "psnr"}
    assert torch.isclose(total, ((rendered - target) ** 2).mean() + 0.1 * opacities.mean())
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in details.values())


def test_combined_loss_with_all_terms(tmp_path, monkeypatch, random_lpips):
    tiny_depth_anything().save_pretrained(tmp_path / "da")
    monkeypatch.setattr(losses_module, "load_lpips", lambda source, linear, device=None: random_lpips)
    losses = Losses(LossConfig(depth_model=str(tmp_path / "da")))
    inputs = torch.rand(1, 2, 30, 40, 3)
    prior = losses.depth_prior(inputs)  # [1, 2, 30, 40]
    assert prior.shape == (1, 2, 30, 40)
    rendered = torch.rand(1, 2, 16, 16, 3, requires_grad=True)
    z = (torch.rand(1, 2, 30, 40) + 0.5).requires_grad_()
    total, details = losses(rendered, torch.rand(1, 2, 16, 16, 3), torch.rand(1, 50), depth_z=z, prior_disp=prior)
    assert set(details) == {"mse", "perceptual", "opacity", "depth", "psnr"}
    weighted = details["mse"] + 0.5 * details["perceptual"] + 0.1 * details["opacity"] + 0.01 * details["depth"]
    assert torch.isclose(total.detach(), weighted)
    total.backward()
    assert torch.isfinite(rendered.grad).all() and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="prior_disp"):
        losses(rendered, rendered.detach(), torch.rand(1, 50), depth_z=z)


def test_depth_prior_sizes_and_local_loading(tmp_path):
    model = tiny_depth_anything()
    prior = DepthPrior(model)
    assert prior.network_size(30, 40) == (28, 42)
    assert DepthPrior(model, short_side=56).network_size(30, 40) == (56, 70)
    images = torch.rand(2, 3, 30, 40, 3)
    disp = prior(images)
    assert disp.shape == (2, 3, 30, 40) and disp.dtype == torch.float32 and torch.isfinite(disp).all()
    model.save_pretrained(tmp_path)
    loaded = load_depth_prior(tmp_path)
    assert torch.allclose(loaded(images), disp, atol=1e-5)


def test_depth_prior_rejects_metric_models_and_reports_missing_models():
    with pytest.raises(ValueError, match="relative"):
        DepthPrior(tiny_depth_anything(depth_estimation_type="metric"))
    with pytest.raises(OSError, match="save_pretrained"):
        load_depth_prior("/nonexistent/depth-model")
