"""The Mamba2 CPU kernels (csrc/mamba2_*.cpp) against float64 evaluations of their formulas and
against their PyTorch twins, and the rule that picks one or the other."""

import logging

import pytest
import torch
import torch.nn.functional as F

from model import fast_path, native_kernels, ssd
from model.mamba2 import GatedRMSNorm

DTYPES = [torch.float32, torch.bfloat16]


def ops():
    library = native_kernels._library()
    assert library is not None, "the native kernels must build wherever the tests run"
    return library


def rounding(dtype: torch.dtype) -> float:
    """Relative error allowed for one computed value: a bfloat16 rounding (2^-9, with a factor 2 for
    the float32 arithmetic before it), or for float32 the rounding of exp arguments, which reach
    about -100 here (100 * 2^-24 ~ 6e-6 relative to the exp)."""
    return 2.0**-8 if dtype == torch.bfloat16 else 1e-5


# --- the chunked scan (csrc/mamba2_scan.cpp) -----------------------------------------------------

def scan_inputs(b, l, h, p, g, n, dt_scale=1.0, seed=0):
    """Scan inputs (dt already softplus'd) with A in [-16, -1] as at init; x, B, C in the layouts the
    block hands over (x rows h * p wide, B and C [b, l, g * n])."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h * p, generator=gen)
    dt = F.softplus(torch.randn(b, l, h, generator=gen) - 1.0) * dt_scale
    A = -torch.empty(h).uniform_(1.0, 16.0, generator=gen)
    B, C = (torch.randn(b, l, g * n, generator=gen) / n**0.5 for _ in range(2))
    D = torch.randn(h, p, generator=gen)
    return x, dt, A, B, C, D


def recurrence(x, dt, A, B, C, D, h, g):
    """The float64 time-step recurrence (model/ssd.py `chunk_scan_ref`) on the same values, and the
    same on magnitudes, which bounds the sum of the magnitudes of each output's terms."""
    b, l, _ = x.shape
    split = (lambda t, k: t.double().unflatten(-1, (k, -1)))

    def run(x, B, C, D):
        return ssd.chunk_scan_ref(split(x, h), dt.double(), A.double(), split(B, g), split(C, g),
                                  D=D.double()).flatten(-2)
    return run(x, B, C, D), run(x.abs(), B.abs(), C.abs(), D.abs())


# (b, l, h, p, g, n, chunk): the `tiny` and `small` presets' scans, two groups, a final partial chunk,
# a sequence shorter than one chunk, head widths that are no multiple of the vector length.
SCAN_SHAPES = [(1, 64, 2, 16, 1, 16, 32), (2, 77, 4, 8, 2, 6, 16), (1, 130, 8, 32, 1, 64, 64),
               (2, 5, 3, 10, 1, 4, 8), (1, 96, 4, 24, 2, 10, 16)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SCAN_SHAPES)
@pytest.mark.parametrize("dt_scale", [0.2, 1.0, 8.0])
def test_scan_kernel_matches_the_recurrence(dtype, shape, dt_scale):
    """dt_scale sets the decay regime: 0.2 decays so slowly that a state's scale must be reset on the
    way, 8 so fast that many chunks take the per-head scores (log-decay below -60 within a chunk).
    float32: the recurrence's values to float32 rounding (exp arguments reach ~-500: 500 * 2^-24
    relative); bfloat16: operands rounded once each, an output's error below a few roundings
    (2^-9) of the magnitude of its terms (the terms cancel, so relative error per output would not do)."""
    b, l, h, p, g, n, chunk = shape
    x, dt, A, B, C, D = scan_inputs(b, l, h, p, g, n, dt_scale)
    x, B, C = x.to(dtype), B.to(dtype), C.to(dtype)
    y = torch.full_like(x, 7.0)
    ops().ssd_scan(x, dt, A, B, C, D, g, chunk, y)
    want, size = recurrence(x, dt, A, B, C, D, h, g)
    error = (y.double() - want).abs()
    allowed = (4 * 2.0**-9 if dtype == torch.bfloat16 else 3e-5) * size + 1e-30
    assert (error <= allowed).all(), f"worst error / allowed {(error / allowed).max():.3f}"
    if dtype == torch.bfloat16:
        assert error.max() > 2.0**-10 * size.mean()  # bfloat16 products really ran


def test_scan_kernel_reads_strided_rows_and_writes_only_its_output():
    b, l, h, p, g, n = 2, 40, 4, 8, 2, 6
    x, dt, A, B, C, D = scan_inputs(b, l, h, p, g, n)
    wide = torch.randn(b, l, h * p + 2 * g * n + 9)  # x, B and C as slices of one wider tensor
    wide[..., 5:5 + h * p] = x
    bc = torch.randn(b, l, 2, g * n + 3)  # B and C with equal strides
    bc[:, :, 0, :g * n], bc[:, :, 1, :g * n] = B, C
    out = torch.full((b, l, h * p + 4), 7.0)
    ops().ssd_scan(wide[..., 5:5 + h * p], dt, A, bc[:, :, 0, :g * n], bc[:, :, 1, :g * n], D, g, 8,
                   out[..., 2:2 + h * p])
    want, _ = recurrence(x, dt, A, B, C, D, h, g)
    torch.testing.assert_close(out[..., 2:2 + h * p].double(), want, rtol=3e-5, atol=3e-5)
    assert (out[..., :2] == 7).all() and (out[..., 2 + h * p:] == 7).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_scan_kernel_agrees_with_the_pytorch_chunks(dtype, monkeypatch):
    """chunk_scan through the kernel and through its PyTorch twin (same chunk), as the model calls
    it: float32 to rounding; bfloat16 to a few roundings (the twin rounds scores, states and readout
    once more each)."""
    x, dt, A, B, C, D = scan_inputs(2, 150, 4, 16, 2, 32)
    args = (x.unflatten(-1, (4, 16)).to(dtype), dt, A, B.unflatten(-1, (2, 32)).to(dtype),
            C.unflatten(-1, (2, 32)).to(dtype), 32)
    native = ssd.chunk_scan(*args, D=D)
    monkeypatch.setattr(native_kernels, "_library", lambda: None)
    twin = ssd.chunk_scan(*args, D=D)
    scale = twin.float().abs().mean()
    tol = 1e-5 if dtype == torch.float32 else 2.0**-6
    torch.testing.assert_close(native.float(), twin.float(), rtol=tol, atol=tol * scale)


def test_bfloat16_scans_with_odd_sizes_take_the_pytorch_chunks(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    x, dt, A, B, C, D = scan_inputs(1, 20, 2, 4, 1, 5)
    args = (x.unflatten(-1, (2, 4)).bfloat16(), dt, A, B.unflatten(-1, (1, 5)).bfloat16(),
            C.unflatten(-1, (1, 5)).bfloat16(), 8)
    with caplog.at_level(logging.INFO, logger="model.ssd"):
        y = ssd.chunk_scan(*args, D=D)
    assert "SSD chunk_scan: PyTorch (d_state 5 and chunk 8 must be even for bfloat16 products)" in caplog.messages
    want, size = recurrence(*(t.float() for t in (x.bfloat16(), dt, A, B.bfloat16(), C.bfloat16(), D)), 2, 1)
    assert ((y.flatten(-2).double() - want).abs() <= 8 * 2.0**-9 * size + 1e-30).all()


# --- the gated RMSNorm -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
def test_gated_rms_norm_computes_its_formula(dtype, groups):
    gen = torch.Generator().manual_seed(groups)
    norm = GatedRMSNorm(24, groups)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=gen)
    zxy = (torch.randn(3, 7, 60, generator=gen) * 3).to(dtype)
    z, y = zxy[..., 5:29], zxy[..., 30:54]  # strided rows, as slices of the input projection
    with torch.no_grad():
        out, ref = norm(y, z), norm.forward_ref(y, z)
    h = (y.double() * F.silu(z.double())).unflatten(-1, (groups, -1))
    want = (h / torch.sqrt(h.square().mean(-1, keepdim=True) + norm.eps)).flatten(-2) * norm.weight.double()
    assert out.dtype == dtype and out.shape == y.shape
    torch.testing.assert_close(out.double(), want, rtol=rounding(dtype), atol=1e-6)
    torch.testing.assert_close(out.double(), ref.double(), rtol=2 * rounding(dtype), atol=1e-6)


# --- which path runs -----------------------------------------------------------------------------

def test_the_twins_run_when_gradients_are_needed_or_the_dtype_is_other(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    u, decay = torch.randn(2, 3, 4), torch.rand(2, 3)
    with caplog.at_level(logging.INFO, logger="model.native_kernels"):
        assert native_kernels.kernels("stage", u, decay) is not None
        assert native_kernels.kernels("stage", u.requires_grad_(), decay) is None
        with torch.no_grad():
            assert native_kernels.kernels("stage", u, decay) is not None
        assert native_kernels.kernels("stage", u.detach().double(), decay) is None
        monkeypatch.setattr(native_kernels, "_library", lambda: None)
        assert native_kernels.kernels("stage", u.detach(), decay) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "model.native_kernels"]
    assert messages == ["stage: native CPU kernel", "stage: PyTorch (gradients needed)",
                        "stage: PyTorch (cpu torch.float64 tensors)", "stage: PyTorch (native kernels unavailable)"]


# --- the causal conv + SiLU, forwards and over the reversed sequence -----------------------------

# (x, B, C) widths: the `tiny` and `small` first-stage blocks (in_proj 164 and 388 wide), `paper`'s
# narrower block, and widths that are no multiple of 8 or of the kernel's vector length.
CONV_SPLITS = [(64, 16, 16), (128, 64, 64), (512, 256, 256), (13, 5, 5)]


def conv_inputs(dtype, b, l, splits, taps=4, seed=0):
    """xbc as a block hands it over: a slice of a wider projection (strided rows), with weights [D, K]."""
    gen = torch.Generator().manual_seed(seed)
    d = sum(splits)
    wide = torch.randn(b, l, d + 2 * d // 3 + 7, generator=gen).to(dtype)
    xbc = wide[..., d // 3 + 3:d // 3 + 3 + d]
    return xbc, torch.randn(d, taps, generator=gen) * 0.5, torch.randn(d, generator=gen) * 0.5


def conv_formula(xbc, weight, bias):
    """float64 silu(bias + sum_k weight[:, k] * x[t - K + 1 + k]), zero before the start; and the sum
    of its terms' magnitudes, which bounds the float32 accumulation's error."""
    b, l, d = xbc.shape
    k = weight.shape[1]
    x = F.pad(xbc.double().transpose(1, 2), (k - 1, 0))  # [b, D, K - 1 + l]
    terms = [weight[:, j].double()[:, None] * x[..., j:j + l] for j in range(k)]
    pre = (bias.double()[:, None] + sum(terms)).transpose(1, 2)  # [b, l, D]
    size = (bias.double().abs()[:, None] + sum(t.abs() for t in terms)).transpose(1, 2)
    return F.silu(pre), size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("splits", CONV_SPLITS)
@pytest.mark.parametrize("b, l", [(1, 1), (2, 3), (3, 37)])  # l = 1 and l < d_conv: taps read the zero padding
def test_causal_conv_silu_computes_its_formula_and_matches_its_twin(dtype, reverse, splits, b, l):
    from model.mamba2 import causal_conv1d_ref

    xbc, weight, bias = conv_inputs(dtype, b, l, splits, seed=l)
    outs = ops().causal_conv1d_silu(xbc, weight.t().contiguous(), bias, list(splits), reverse)
    assert [tuple(o.shape) for o in outs] == [(b, l, w) for w in splits]
    assert all(o.dtype == dtype and o.is_contiguous() for o in outs)
    got = torch.cat(outs, dim=-1).double()  # [b, l, D]
    scan_order = xbc.flip(1) if reverse else xbc  # the sequence the conv runs over

    want, size = conv_formula(scan_order, weight, bias)
    assert ((got - want).abs() <= rounding(dtype) * want.abs() + 1e-6 * size).all()

    # the twin rounds weight and bias to the input's dtype (bfloat16: one rounding per tap)
    twin = causal_conv1d_ref(scan_order, weight.to(dtype), bias.to(dtype)).double()
    atol = 2.0**-7 * size if dtype == torch.bfloat16 else 1e-6 * size
    assert ((got - twin).abs() <= 2 * rounding(dtype) * twin.abs() + atol).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("taps", [1, 2, 3])
def test_causal_conv_silu_with_fewer_taps(dtype, reverse, taps):
    xbc, weight, bias = conv_inputs(dtype, 2, 9, (13, 5, 5), taps)
    got = torch.cat(ops().causal_conv1d_silu(xbc, weight.t().contiguous(), bias, [13, 5, 5], reverse), dim=-1)
    want, size = conv_formula(xbc.flip(1) if reverse else xbc, weight, bias)
    assert ((got.double() - want).abs() <= rounding(dtype) * want.abs() + 1e-6 * size).all()


# --- the backward direction's gated RMSNorm, added in reversed order -----------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("b, l", [(1, 1), (3, 10)])
def test_gated_rms_norm_add_reversed_computes_its_formula(dtype, groups, b, l):
    gen = torch.Generator().manual_seed(groups + l)
    norm = GatedRMSNorm(26, groups)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=gen)
    zxy = (torch.randn(b, l, 60, generator=gen) * 3).to(dtype)
    z = zxy[..., 5:31]  # strided rows in the sequence's order, as the input projection's slice
    y = (torch.randn(b, l, 26, generator=gen) * 2).to(dtype)  # contiguous, in the reversed sequence's order
    out = torch.randn(b, l, 26, generator=gen).to(dtype)  # the forward direction's output
    before = out.clone()
    ops().gated_rms_norm_add_reversed(out, y, z, norm.weight.float().contiguous(), groups, norm.eps)

    h = (y.flip(1).double() * F.silu(z.double())).unflatten(-1, (groups, -1))  # token order
    normed = (h / torch.sqrt(h.square().mean(-1, keepdim=True) + norm.eps)).flatten(-2) * norm.weight.double()
    want = before.double() + normed
    bound = rounding(dtype) * (before.double().abs() + normed.abs()) + 1e-6
    assert out.dtype == dtype and ((out.double() - want).abs() <= bound).all()
    with torch.no_grad():
        twin = before.double() + norm.forward_ref(y.flip(1), z).double()  # the twin rounds twice
    assert ((out.double() - twin).abs() <= 2 * bound).all()
