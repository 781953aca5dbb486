import logging
import math

import pytest
import torch
import torch.nn.functional as F

from model import fast_path, mamba2, ssd
from model.config import PRESETS, MambaConfig
from model.mamba2 import BiMamba2, Mamba2Block, causal_conv1d, causal_conv1d_ref
from model.ssd import chunk_scan_ref

CFG = MambaConfig(d_state=8, headdim=4, ngroups=1, chunk_size=16, cpu_chunk_size=8)


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Perturb every parameter so no symmetry or identity in the init hides a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def conv_via_conv1d(x, weight, bias):
    """The same causal conv through F.conv1d (channels-first, explicit left padding)."""
    k = weight.shape[-1]
    y = F.conv1d(F.pad(x.transpose(1, 2), (k - 1, 0)), weight[:, None], bias, groups=x.shape[-1])
    return F.silu(y).transpose(1, 2)


def test_causal_conv_matches_its_formula():
    gen = torch.Generator().manual_seed(0)
    b, l, d, k = 2, 11, 5, 4
    x = torch.randn(b, l, d, generator=gen)
    weight, bias = torch.randn(d, k, generator=gen), torch.randn(d, generator=gen)
    expected = torch.empty(b, l, d)
    for t in range(l):
        acc = bias.expand(b, d).clone()
        for j in range(k):
            src = t - (k - 1) + j  # tap j looks back k-1-j steps; before the start it reads zeros
            if src >= 0:
                acc += weight[:, j] * x[:, src]
        expected[:, t] = F.silu(acc)
    torch.testing.assert_close(conv_via_conv1d(x, weight, bias), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(causal_conv1d_ref(x, weight, bias), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(causal_conv1d(x, weight, bias), expected, rtol=1e-6, atol=1e-6)


def naive_direction(scan, zxbcdt, cfg):
    """One direction from its definition: conv, SSM recurrence (float64), gated RMSNorm."""
    d_inner = scan.d_inner
    gn = cfg.ngroups * cfg.d_state
    z, xbc, dt = zxbcdt.double().split([d_inner, d_inner + 2 * gn, scan.nheads], -1)
    xbc = conv_via_conv1d(xbc, scan.conv1d.weight[:, 0].double(), scan.conv1d.bias.double())
    x, B, C = xbc.split([d_inner, gn, gn], -1)
    y = chunk_scan_ref(x.unflatten(-1, (scan.nheads, cfg.headdim)), dt, -torch.exp(scan.A_log.double()),
                       B.unflatten(-1, (cfg.ngroups, cfg.d_state)), C.unflatten(-1, (cfg.ngroups, cfg.d_state)),
                       D=scan.D.double(), dt_bias=scan.dt_bias.double(), dt_softplus=True).flatten(-2)
    gated = y * F.silu(z)
    groups = gated.unflatten(-1, (cfg.ngroups, -1))
    normed = groups / torch.sqrt(groups.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
    return normed.flatten(-2) * scan.norm.weight.double()


@pytest.mark.parametrize("ngroups", [1, 2])
def test_bimamba_matches_naive_definition(ngroups):
    cfg = MambaConfig(d_state=8, headdim=4, ngroups=ngroups, chunk_size=16, cpu_chunk_size=8)
    torch.manual_seed(0)
    layer = BiMamba2(16, cfg)
    randomize(layer)
    u = torch.randn(2, 21, 16)
    with torch.no_grad():
        zxbcdt = layer.in_proj(u)
        fwd = naive_direction(layer.mamba_scans[0], zxbcdt, cfg)
        bwd = naive_direction(layer.mamba_scans[1], zxbcdt.flip(1), cfg).flip(1)
        expected = (fwd + bwd) @ layer.out_proj.weight.double().T  # summed, then one shared projection
        torch.testing.assert_close(layer(u).double(), expected, rtol=1e-4, atol=1e-5)


def test_reversing_the_sequence_swaps_the_directions():
    torch.manual_seed(0)
    layer = BiMamba2(16, CFG)
    randomize(layer)
    swapped = BiMamba2(16, CFG)
    swapped.load_state_dict(layer.state_dict())
    with torch.no_grad():
        first, second = swapped.mamba_scans
        saved = {k: v.clone() for k, v in first.state_dict().items()}
        first.load_state_dict(second.state_dict())
        second.load_state_dict(saved)
    u = torch.randn(2, 19, 16)
    with torch.no_grad():
        torch.testing.assert_close(swapped(u.flip(1)), layer(u).flip(1), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(layer(u.flip(1)), layer(u).flip(1), atol=1e-3)  # the directions differ


def test_block_is_residual_over_rmsnorm():
    torch.manual_seed(0)
    block = Mamba2Block(16, CFG)
    randomize(block)
    x = torch.randn(1, 9, 16)
    normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + CFG.norm_eps) * block.norm.weight
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.mamba(normed), rtol=1e-5, atol=1e-5)


def test_init_follows_mamba2_defaults():
    torch.manual_seed(0)
    layer = BiMamba2(256, MambaConfig())
    for scan in layer.mamba_scans:
        dt0 = F.softplus(scan.dt_bias)
        assert dt0.min() >= 1e-4 - 1e-9 and dt0.max() <= 0.1 + 1e-6
        assert torch.exp(scan.A_log).min() >= 1.0 and torch.exp(scan.A_log).max() <= 16.0
        assert torch.equal(scan.D, torch.ones(8)) and torch.equal(scan.norm.weight, torch.ones(512))
    # the two directions draw their dt and A independently
    assert not torch.equal(layer.mamba_scans[0].A_log, layer.mamba_scans[1].A_log)
    assert math.isclose(F.softplus(layer.mamba_scans[0].dt_bias).log().mean().item(),
                        (math.log(1e-3) + math.log(0.1)) / 2, abs_tol=1.5)


def test_parameter_names_and_shapes_follow_the_official_layout():
    shapes = {k: tuple(v.shape) for k, v in Mamba2Block(256, MambaConfig()).state_dict().items()}
    expected = {"norm.weight": (256,), "mamba.in_proj.weight": (1544, 256), "mamba.out_proj.weight": (256, 512)}
    for i in (0, 1):
        expected.update({
            f"mamba.mamba_scans.{i}.conv1d.weight": (1024, 1, 4),
            f"mamba.mamba_scans.{i}.conv1d.bias": (1024,),
            f"mamba.mamba_scans.{i}.dt_bias": (8,),
            f"mamba.mamba_scans.{i}.A_log": (8,),
            f"mamba.mamba_scans.{i}.D": (8,),
            f"mamba.mamba_scans.{i}.norm.weight": (512,),
        })
    assert shapes == expected


# --- causal-conv1d's CUDA kernel: when it runs and what layout it is handed -----------------------------

# Block widths of every preset and the in_proj width each block's conv input is sliced from.
# Kernel rule (causal-conv1d csrc/causal_conv1d.cpp): a channels-last input needs its stride(2), the
# in_proj width, to be a multiple of 8: true of `paper`, not of the first stage of `small` and `tiny`.
PRESET_WIDTHS = [  # (preset, block width, in_proj width, does the in_proj slice satisfy the kernel?)
    ("paper", 256, 1544, True), ("paper", 1024, 4640, True),
    ("small", 64, 388, False), ("small", 256, 1168, True),
    ("tiny", 32, 164, False), ("tiny", 64, 296, True),
]


def test_preset_widths_table_covers_every_mamba_block():
    for name, config in PRESETS.items():
        widths = {w for kind, w in zip(config.blocks, config.widths) if kind == "m"}
        assert widths == {w for p, w, _, _ in PRESET_WIDTHS if p == name}


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def in_proj_slice(layer: BiMamba2, u: torch.Tensor) -> torch.Tensor:
    """The xBC columns of the in_proj output, which the official layout orders [z, x, B, C, dt]."""
    scan = layer.mamba_scans[0]
    return layer.in_proj(u)[..., scan.d_inner:scan.d_inner + scan.conv1d.in_channels]  # [b, l, conv_dim]


def kernel_would_accept(x: torch.Tensor) -> bool:
    """causal_conv1d_fwd's checks on x [b, d, l], as written in csrc/causal_conv1d.cpp, plus the 16-byte
    alignment its channels-last kernel's vector loads assume."""
    if x.stride(2) != 1 and x.stride(1) != 1:
        return False
    if x.stride(1) == 1 and x.stride(2) > 1:  # is_channel_last
        return x.shape[1] % 8 == 0 and x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0 and x.data_ptr() % 16 == 0
    return True


@pytest.mark.parametrize("preset_name, width, in_proj_width, view_ok", PRESET_WIDTHS)
def test_kernel_input_at_every_preset_width(preset_name, width, in_proj_width, view_ok):
    cfg = PRESETS[preset_name].mamba
    torch.manual_seed(0)
    layer = BiMamba2(width, cfg)
    assert layer.in_proj.out_features == in_proj_width
    with torch.no_grad():
        xbc = in_proj_slice(layer, torch.randn(2, 37, width))  # [b, l, conv_dim], a strided view
    view = xbc.transpose(1, 2)
    assert kernel_would_accept(view) == view_ok
    assert (mamba2.kernel_layout_blocker(view) is None) == view_ok
    handed, copied = mamba2.kernel_input(xbc)
    assert kernel_would_accept(handed) and mamba2.kernel_layout_blocker(handed) is None
    assert torch.equal(handed.transpose(1, 2), xbc)  # same values, only the layout may change
    shares_memory = handed.untyped_storage().data_ptr() == xbc.untyped_storage().data_ptr()
    assert shares_memory == view_ok and (copied is None) == view_ok  # copied only when the kernel needs it
    if not view_ok:
        assert f"x.stride(2) = {in_proj_width}" in copied
        assert handed.stride(1) == 1  # conv_dim is a multiple of 8 here: the channels-last copy


def test_kernel_layout_rules_on_hand_made_layouts():
    x = torch.randn(2, 96, 40)  # [b, d, l]
    assert mamba2.kernel_layout_blocker(x) is None  # channels-first: any d, any stride
    assert mamba2.kernel_layout_blocker(torch.randn(2, 13, 40)) is None
    assert mamba2.kernel_layout_blocker(torch.randn(2, 40, 96).transpose(1, 2)) is None  # channels-last, d % 8 == 0
    assert "channels = 12" in mamba2.kernel_layout_blocker(torch.randn(2, 40, 12).transpose(1, 2))
    odd_batch = torch.randn(2, 41 * 96 + 4)[:, :41 * 96].view(2, 41, 96).transpose(1, 2)
    assert "x.stride(0) = 3940" in mamba2.kernel_layout_blocker(odd_batch)
    misaligned = torch.randn(2, 40, 104)[..., 2:98].transpose(1, 2)  # strides fine, starts 8 bytes in
    assert "aligned" in mamba2.kernel_layout_blocker(misaligned)
    assert "neither" in mamba2.kernel_layout_blocker(torch.randn(2, 96, 40, 2)[..., 0])
    # a channels-first copy for a width the channels-last kernel cannot take at all
    handed, copied = mamba2.kernel_input(torch.randn(2, 40, 20)[..., :12])
    assert copied is not None and handed.stride(2) == 1 and kernel_would_accept(handed)


@pytest.mark.parametrize("available, device, capability, width, dtype, fragment", [
    (True, "cuda", (8, 0), 4, torch.bfloat16, None),
    (True, "cuda", (7, 5), 2, torch.float32, None),
    (True, "cuda", (9, 0), 3, torch.float16, None),
    (True, "cuda", (7, 0), 4, torch.float32, "compute capability 7.0"),
    (True, "cuda", (6, 1), 4, torch.float32, "compute capability 6.1"),
    (True, "cuda", (8, 6), 5, torch.float32, "d_conv 5"),
    (True, "cuda", (8, 6), 4, torch.float64, "float64 inputs"),
    (False, "cuda", (8, 0), 4, torch.float32, "causal_conv1d does not import"),
    (True, "cpu", None, 4, torch.float32, "running on cpu"),
    (False, "cpu", None, 4, torch.float32, "running on cpu"),
])
def test_conv_kernel_rule(available, device, capability, width, dtype, fragment):
    """causal-conv1d's own conditions (csrc/causal_conv1d.cpp, setup.py): sm75+, 2-4 taps, fp32/fp16/bf16."""
    blocker = mamba2.conv_kernel_blocker(available, device, capability, width, dtype)
    assert blocker is None if fragment is None else fragment in blocker


def test_conv_falls_back_with_the_reason_logged(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    x, weight, bias = torch.randn(1, 9, 16), torch.randn(16, 4), torch.randn(16)
    with caplog.at_level(logging.INFO, logger="model"):
        causal_conv1d(x, weight, bias)
        causal_conv1d(x, weight, bias)
    messages = [r.getMessage() for r in caplog.records if r.name in ("model.mamba2", "model.native_kernels")]
    reason = mamba2.conv_kernel_blocker(mamba2.causal_conv1d_fn is not None, "cpu", None, 4, x.dtype)
    assert messages == [f"causal conv1d: PyTorch depthwise convolution (oneDNN) ({reason})"]


def test_conv_kernel_request_without_cuda_is_an_error():
    if mamba2.causal_conv1d_fn is not None and torch.cuda.is_available():
        pytest.skip("CUDA kernel present")
    with pytest.raises(RuntimeError, match="'kernel' requested but causal-conv1d cannot run: running on cpu"):
        causal_conv1d(torch.randn(1, 3, 2), torch.randn(2, 4), None, backend="kernel")


needs_kernels = pytest.mark.skipif(
    not (torch.cuda.is_available() and mamba2.causal_conv1d_fn is not None and ssd.kernel_available()),
    reason="needs a CUDA GPU with causal-conv1d and mamba_ssm (pip install -e .[cuda])")


@needs_kernels
@pytest.mark.parametrize("preset_name, width, in_proj_width, view_ok", PRESET_WIDTHS)
def test_causal_conv1d_kernel_on_the_in_proj_layout_matches_reference(preset_name, width, in_proj_width, view_ok):
    """The kernel fed exactly what a block feeds it, forward and backward, against the PyTorch twin."""
    torch.manual_seed(0)
    layer = BiMamba2(width, PRESETS[preset_name].mamba).cuda()
    u = torch.randn(2, 301, width, device="cuda")
    conv = layer.mamba_scans[0].conv1d
    results = []
    for backend in ("kernel", "torch"):
        xbc = in_proj_slice(layer, u).detach().requires_grad_()
        y = causal_conv1d(xbc, conv.weight[:, 0], conv.bias, backend)
        grads = torch.autograd.grad((y * torch.cos(y)).sum(), [xbc, conv.weight, conv.bias])
        results.append((y, *grads))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("preset_name, width, in_proj_width, view_ok", PRESET_WIDTHS)
def test_mamba2_block_kernels_match_pytorch_path(preset_name, width, in_proj_width, view_ok):
    """The real block of every preset width through causal-conv1d and mamba_ssm vs its PyTorch path."""
    torch.manual_seed(0)
    kernel_block = Mamba2Block(width, PRESETS[preset_name].mamba, backend="kernel").cuda()
    randomize(kernel_block)
    torch_block = Mamba2Block(width, PRESETS[preset_name].mamba, backend="torch").cuda()
    torch_block.load_state_dict(kernel_block.state_dict())
    x = torch.randn(2, 301, width, device="cuda")  # odd length: a partial last chunk
    outputs, grads = [], []
    for block in (kernel_block, torch_block):
        xi = x.clone().requires_grad_()
        y = block(xi)
        y.square().mean().backward()
        outputs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in block.parameters()])
    # the Triton scan's fp32 dot products may use TF32 (10-bit mantissa): compare norms, not elements
    assert relative_error(outputs[0], outputs[1]) < 5e-3
    for (name, _), got, expected in zip([("x", None), *kernel_block.named_parameters()], *grads):
        assert relative_error(got, expected) < 2e-2, name
    # under bf16 autocast the kernels' error (against fp32) stays within that of the PyTorch path's
    errors = []
    for block in (kernel_block, torch_block):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            y_bf16 = block(x).float()
        errors.append(relative_error(y_bf16, outputs[1]))
    assert errors[0] <= 2 * errors[1] + 1e-3, errors


# --- the CPU kernels' path (no gradients) against the PyTorch path (gradients) ----------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("preset_name, width", [("tiny", 32), ("small", 64), ("tiny", 64), ("paper", 256)])
def test_bimamba_native_path_matches_the_pytorch_path(dtype, preset_name, width, caplog, monkeypatch):
    """Without gradients a CPU block convolves both directions natively (reading the projection in
    place, the backward direction reversed) and sums them inside the norm; with gradients it runs
    the PyTorch code that training uses. Same block, same input: float32 agrees to rounding; in
    bfloat16 (matmul weights as set_precision converts them) the native path is no further from the
    float32 network than the PyTorch path is."""
    monkeypatch.setattr(fast_path, "_reported", set())
    torch.manual_seed(0)
    layer = BiMamba2(width, PRESETS[preset_name].mamba)
    randomize(layer)
    u = torch.randn(3, 77, width)  # b > 1, a partial last chunk
    with caplog.at_level(logging.INFO, logger="model"):
        reference = layer(u).detach()  # float32; parameters require gradients: the PyTorch path
        layer.in_proj.to(dtype), layer.out_proj.to(dtype)
        torch_path = layer(u).detach().float()
        with torch.no_grad():
            native = layer(u).float()
    messages = [r.getMessage() for r in caplog.records if r.name in ("model.mamba2", "model.native_kernels")]
    assert "causal conv1d: PyTorch (gradients needed)" in messages
    assert "causal conv1d: native CPU kernel" in messages
    if dtype == torch.float32:
        # (the native scan sums its products in another order: outputs near zero differ by a few
        # float32 roundings of the terms, which reach ~10 here)
        torch.testing.assert_close(native, torch_path, rtol=1e-5, atol=3e-5)
    else:
        assert relative_error(native, torch_path) < 1e-2  # both about 6e-3 from float32
        assert relative_error(native, reference) <= 1.05 * relative_error(torch_path, reference)


def test_bimamba_with_more_taps_than_the_cpu_kernel_runs_pytorch(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    cfg = MambaConfig(d_state=8, headdim=4, d_conv=mamba2.CPU_CONV_MAX_TAPS + 1, chunk_size=16, cpu_chunk_size=8)
    torch.manual_seed(0)
    layer = BiMamba2(16, cfg)
    randomize(layer)
    u = torch.randn(2, 13, 16)
    with caplog.at_level(logging.INFO, logger="model"), torch.no_grad():
        zxbcdt = layer.in_proj(u)
        fwd = naive_direction(layer.mamba_scans[0], zxbcdt, cfg)
        bwd = naive_direction(layer.mamba_scans[1], zxbcdt.flip(1), cfg).flip(1)
        torch.testing.assert_close(layer(u).double(), (fwd + bwd) @ layer.out_proj.weight.double().T,
                                   rtol=1e-4, atol=1e-5)
    messages = [r.getMessage() for r in caplog.records if r.name in ("model.mamba2", "model.native_kernels")]
    assert "causal conv1d: native CPU kernel not used (d_conv 5: the CPU kernel takes 1 to 4 taps)" in messages
