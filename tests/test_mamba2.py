import math

import pytest
import torch
import torch.nn.functional as F

from model import mamba2
from model.config import MambaConfig
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


def test_conv_kernel_request_without_cuda_is_an_error():
    if mamba2.causal_conv1d_fn is not None and torch.cuda.is_available():
        pytest.skip("CUDA kernel present")
    with pytest.raises(RuntimeError, match="'kernel' requested"):
        causal_conv1d(torch.randn(1, 3, 2), torch.randn(2, 4), None, backend="kernel")


@pytest.mark.skipif(not (torch.cuda.is_available() and mamba2.causal_conv1d_fn is not None),
                    reason="needs CUDA and causal-conv1d")
def test_causal_conv1d_kernel_matches_reference():
    x = torch.randn(2, 100, 64, device="cuda")
    weight, bias = torch.randn(64, 4, device="cuda"), torch.randn(64, device="cuda")
    torch.testing.assert_close(causal_conv1d(x, weight, bias, backend="kernel"), causal_conv1d_ref(x, weight, bias),
                               rtol=1e-4, atol=1e-4)
