import logging

import pytest
import torch

from model import fast_path

from model.build import build_model
from model.config import GaussianHeadConfig, preset
from model.gaussian_head import GaussianHead
from model.merge import TokenMerge
from model.tokenizer import patchify, pixel_features
from tests.support import random_cameras, random_images


# --- components -------------------------------------------------------------------------------

def test_pixel_features_and_patch_order():
    b, v, h, w, p = 1, 2, 8, 12, 4
    images = random_images(b, v, h, w)
    origins, dirs = random_cameras(b, v, h, w).rays()
    feats = pixel_features(images, origins, dirs)
    torch.testing.assert_close(feats[..., :3], images * 2 - 1)
    torch.testing.assert_close(feats[..., 3:6], torch.cross(origins, dirs, dim=-1))
    torch.testing.assert_close(feats[..., 6:], dirs)
    tokens = patchify(feats, p)  # [b, v*hh*ww, p*p*9]
    hh, ww = h // p, w // p
    for view, i, j, pi, pj, c in [(0, 0, 0, 0, 0, 0), (1, 1, 2, 3, 1, 7), (1, 0, 1, 2, 3, 4)]:
        token = view * hh * ww + i * ww + j
        assert tokens[0, token, (pi * p + pj) * 9 + c] == feats[0, view, i * p + pi, j * p + pj, c]


def test_merge_is_a_grouped_2x2_convolution_per_view():
    torch.manual_seed(0)
    d, d2, g, v, h, w = 4, 8, 2, 3, 4, 6
    merge = TokenMerge(d, d2)
    x = torch.randn(1, g + v * h * w, d)
    out = merge(x, g, v, h, w)
    assert out.shape == (1, g + v * (h // 2) * (w // 2), d2)
    torch.testing.assert_close(out[:, :g], x[:, :g] @ merge.global_proj.weight.T + merge.global_proj.bias)
    view, bi, bj, o = 2, 1, 2, 5  # output channel o reads input channel o // (d2 // d)
    acc = merge.conv.bias[o].clone()
    for di in range(2):
        for dj in range(2):
            token = g + view * h * w + (2 * bi + di) * w + (2 * bj + dj)
            acc += merge.conv.weight[o, 0, di, dj] * x[0, token, o // (d2 // d)]
    torch.testing.assert_close(out[0, g + view * (h // 2) * (w // 2) + bi * (w // 2) + bj, o], acc)


def test_head_places_gaussians_on_their_rays_with_bounded_parameters():
    torch.manual_seed(0)
    cfg = GaussianHeadConfig(sh_degree=3)
    head = GaussianHead(16, 4, cfg)
    with torch.no_grad():
        head.proj.weight.mul_(200)  # large raw outputs exercise the clamps and both sigmoid tails
    b, v, height, width = 2, 3, 8, 12
    origins, dirs = random_cameras(b, v, height, width).rays()
    tokens = torch.randn(b, v * (height // 4) * (width // 4), 16)
    gaussians, distance = head(tokens, origins, dirs)
    n = v * height * width
    assert gaussians.means.shape == (b, n, 3) and gaussians.sh.shape == (b, n, 16, 3)
    raw = head.raw(tokens, v, height // 4, width // 4).reshape(b, n, -1)  # [b, n, 59]
    o, d = origins.flatten(1, 3), dirs.flatten(1, 3)
    dist = distance.flatten(1)
    assert (dist > 0).all() and (dist <= cfg.max_dist).all()
    torch.testing.assert_close(gaussians.means, o + dist[..., None] * d)  # on the pixel's ray
    offset = gaussians.means - o
    torch.testing.assert_close(torch.cross(offset, d, dim=-1), torch.zeros_like(offset), atol=1e-3, rtol=0)
    torch.testing.assert_close(dist, torch.sigmoid(raw[..., :3].mean(-1)) * cfg.max_dist)
    assert (gaussians.log_scales <= cfg.scale_max).all()
    torch.testing.assert_close(gaussians.log_scales, (raw[..., 51:54] + cfg.scale_bias).clamp(max=cfg.scale_max))
    torch.testing.assert_close(gaussians.opacity_logits, raw[..., 58] - 2.0)
    torch.testing.assert_close(gaussians.quats, torch.nn.functional.normalize(raw[..., 54:58], dim=-1))
    torch.testing.assert_close(gaussians.sh[:, :, 5, 2], raw[..., 3 + 5 * 3 + 2])  # [coefficient][rgb]


def test_head_unpatchify_order():
    head = GaussianHead(8, 4, GaussianHeadConfig(sh_degree=0))
    tokens = torch.randn(1, 2 * 2 * 3, 8)
    raw = head.raw(tokens, 2, 2, 3)  # [1, V, h, P, w, P, 14]
    linear = head.proj(head.norm(tokens))  # [1, V*h*w, P*P*14]
    for view, i, j, pi, pj, c in [(0, 0, 0, 0, 0, 0), (1, 1, 2, 3, 1, 13), (1, 0, 1, 2, 3, 5)]:
        token = view * 6 + i * 3 + j
        assert raw[0, view, i, pi, j, pj, c] == linear[0, token, (pi * 4 + pj) * 14 + c]


def test_head_chunking_does_not_change_results():
    torch.manual_seed(0)
    head = GaussianHead(16, 4, GaussianHeadConfig(views_per_chunk=2))
    whole = GaussianHead(16, 4, GaussianHeadConfig(views_per_chunk=100))
    whole.load_state_dict(head.state_dict())
    origins, dirs = random_cameras(1, 5, 8, 8).rays()
    tokens = torch.randn(1, 5 * 4, 16)
    ref, ref_dist = whole(tokens, origins, dirs)
    for grad in (True, False):  # concatenation with autograd, preallocated outputs without
        with torch.set_grad_enabled(grad):
            got, dist = head(tokens, origins, dirs)
        torch.testing.assert_close(dist, ref_dist)
        for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sh_degree", [1, 3])
def test_head_activation_kernel_computes_the_fields_of_its_twin(sh_degree, dtype, caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    """Without autograd on CPU the head's activation is one native pass (csrc/gaussian_head.cpp):
    against a float64 evaluation of the head's formulas on the same raw outputs, and against the
    PyTorch twin, on two batch items, three chunks (one of a single view) and raw values large enough
    to reach the clamps and both sigmoid tails."""
    torch.manual_seed(sh_degree)
    cfg = GaussianHeadConfig(sh_degree=sh_degree, views_per_chunk=2)
    head = GaussianHead(16, 4, cfg)
    with torch.no_grad():
        head.proj.weight.mul_(200)
    head.proj.to(dtype)
    b, v, height, width = 2, 5, 8, 12
    origins, dirs = random_cameras(b, v, height, width).rays()
    tokens = torch.randn(b, v * (height // 4) * (width // 4), 16)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="model"):
        got, distance = head(tokens, origins, dirs)
        per_view = (height // 4) * (width // 4)
        chunks = [head.raw(tokens[:, v0 * per_view:(v0 + 2) * per_view], min(2, v - v0), height // 4, width // 4)
                  for v0 in range(0, v, 2)]  # as the head projects them: the matmul's rounding depends on its size
        raw = torch.cat(chunks, dim=1)  # [b, v, h, P, w, P, C]
        patches = [t.unflatten(2, (height // 4, 4)).unflatten(4, (width // 4, 4)) for t in (origins, dirs)]
        twin, twin_distance = head.activate(raw, *patches)
    n = v * height * width
    twin = {name: t.reshape(b, n, *t.shape[6:]) for name, t in twin.items()}  # [b, v, h, P, w, P, ...] -> [b, n, ...]
    twin_distance = twin_distance.reshape(distance.shape)
    raw = raw.reshape(b, n, -1).double()
    assert "Gaussian head activation: native CPU kernel" in [r.getMessage() for r in caplog.records]
    k = (sh_degree + 1) ** 2
    o, d = origins.flatten(1, 3).double(), dirs.flatten(1, 3).double()
    dist = torch.sigmoid(raw[..., :3].mean(-1)) * cfg.max_dist
    scale, quat = raw[..., 3 + 3 * k:6 + 3 * k], raw[..., 6 + 3 * k:10 + 3 * k]
    want = {"means": o + dist[..., None] * d, "sh": raw[..., 3:3 + 3 * k].unflatten(-1, (k, 3)),
            "log_scales": (scale + cfg.scale_bias).clamp(max=cfg.scale_max),
            "quats": quat / quat.norm(dim=-1, keepdim=True), "opacity_logits": raw[..., -1] + cfg.opacity_bias}
    # float32 arithmetic on exactly the same raw values: a few float32 roundings, except that the
    # sigmoid's argument x (the logits' mean, up to ~100 here) carries a rounding of |x| 2^-24, to
    # which sigmoid is |x|-fold sensitive in relative terms; the means add distances up to 500.
    tol = dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(distance.flatten(1).double(), dist, **tol)
    torch.testing.assert_close(distance, twin_distance, **tol)
    for name, value in want.items():
        assert getattr(got, name).dtype == torch.float32
        torch.testing.assert_close(getattr(got, name).double(), value, **tol)
        torch.testing.assert_close(getattr(got, name), twin[name].float(), **tol)


# --- the model --------------------------------------------------------------------------------

@pytest.mark.parametrize("v, height, width", [(1, 16, 24), (3, 32, 16), (4, 64, 64)])
def test_output_shapes_and_pixel_order(v, height, width):
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    cams = random_cameras(2, v, height, width)
    with torch.no_grad():
        out = model(random_images(2, v, height, width), cams)
    n = v * height * width
    g = out.gaussians
    assert g.means.shape == (2, n, 3) and g.log_scales.shape == (2, n, 3) and g.quats.shape == (2, n, 4)
    assert g.opacity_logits.shape == (2, n) and g.sh.shape == (2, n, 4, 3)
    assert out.distance.shape == out.depth.shape == (2, v, height, width)
    # Gaussian v*H*W + i*W + j sits on the ray of pixel (i, j) of view v
    origins, dirs = cams.rays()
    torch.testing.assert_close(g.means, (origins + out.distance[..., None] * dirs).flatten(1, 3))
    # depth is the camera-space z of each Gaussian
    _, z = cams.project(g.means.view(2, v, height * width, 3))
    torch.testing.assert_close(out.depth.flatten(2), z, rtol=1e-4, atol=1e-4)


def test_invalid_inputs_give_clear_errors():
    model = build_model("tiny")
    multiple = model.config.output_patch_size
    cams = random_cameras(1, 2, 16, 16)
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        model(random_images(1, 2, 16, 16 + multiple // 2), random_cameras(1, 2, 16, 16 + multiple // 2))
    with pytest.raises(ValueError, match=r"\[B, V, H, W, 3\]"):
        model(torch.rand(2, 16, 16, 3), cams)
    with pytest.raises(ValueError, match="cameras must have shape"):
        model(random_images(1, 3, 16, 16), cams)
    with pytest.raises(ValueError, match="cameras are for 16x16"):
        model(random_images(1, 2, 32, 16), cams)
    cams.c2w[0, 1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(random_images(1, 2, 16, 16), cams)


def test_paper_input_multiple_is_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model("paper", device="meta").check_inputs(torch.rand(1, 1, 40, 48, 3), random_cameras(1, 1, 40, 48))


def loss_and_grads(model, images, cams):
    model.zero_grad()
    out = model(images, cams)
    g = out.gaussians
    loss = (g.means.square().mean() * 1e-3 + g.sh.square().mean() + g.log_scales.mean()
            + g.opacity_logits.sigmoid().mean() + g.quats[..., 0].mean())
    loss.backward()
    return loss, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_gradients_reach_every_parameter_and_checkpointing_matches():
    torch.manual_seed(0)
    config = preset("tiny")
    model = build_model(config).train()
    images, cams = random_images(1, 2, 32, 32), random_cameras(1, 2, 32, 32)
    _, grads = loss_and_grads(model, images, cams)
    params = dict(model.named_parameters())
    assert set(grads) == set(params), set(params) - set(grads)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(int(g.abs().sum() > 0) for g in grads.values()) == len(params)

    model.config.checkpointing = True
    _, grads_ckpt = loss_and_grads(model, images, cams)
    for name, g in grads.items():
        torch.testing.assert_close(grads_ckpt[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_bf16_autocast_forward_is_finite_and_float32():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(random_images(1, 2, 32, 32), random_cameras(1, 2, 32, 32))
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        t = getattr(out.gaussians, name)
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name


def test_parameter_count_of_paper_matches_official():
    count = sum(p.numel() for p in build_model("paper", device="meta").parameters())
    assert abs(count - 141.9e6) / 141.9e6 < 0.005
    assert count == 141_918_160  # exact sum over the official module definitions


def test_build_model_rejects_unknown_presets():
    with pytest.raises(ValueError, match=r"valid presets: \['paper', 'small', 'tiny'\]"):
        build_model("huge")


def test_presets_round_trip_through_typed_config():
    from model.config import ModelConfig
    from model.typed_config import from_dict, to_dict

    for name in ("paper", "small", "tiny"):
        config = preset(name)
        assert from_dict(ModelConfig, to_dict(config)) == config
    with pytest.raises(ValueError, match="blocks must be"):
        from_dict(ModelConfig, {"blocks": "mmx"})


def test_from_pretrained_is_the_loaders_network(checkpoint):
    """The classmethod returns load_model's network: the same weights, so the same outputs."""
    from model.longlrm import LongLRM
    from model.pretrained import DEMO_CHECKPOINT, load_model

    for path, shipped in ((None, DEMO_CHECKPOINT), (checkpoint, checkpoint)):
        network = LongLRM.from_pretrained(path, device="cpu")
        reference = load_model(shipped).model
        assert type(network) is LongLRM and not network.training
        multiple = network.config.output_patch_size
        images, cams = random_images(1, 2, multiple, 2 * multiple), random_cameras(1, 2, multiple, 2 * multiple)
        with torch.no_grad():
            got, expected = network(images, cams).gaussians, reference(images, cams).gaussians
        for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
            assert torch.equal(getattr(got, name), getattr(expected, name)), name
