"""The Mamba2 CPU kernels (csrc/mamba2_*.cpp) against float64 evaluations of their formulas and
against their PyTorch twins, and the rule that picks one or the other."""

import logging

import pytest
import torch
import torch.nn.functional as F

from model import fast_path, mamba2_native, ssd
from model.mamba2 import GatedRMSNorm

DTYPES = [torch.float32, torch.bfloat16]


def ops():
    library = mamba2_native._library()
    assert library is not None, "the native kernels must build wherever the tests run"
    return library


def rounding(dtype: torch.dtype) -> float:
    """Relative error allowed for one computed value: a bfloat16 rounding (2^-9, with a factor 2 for
    the float32 arithmetic before it), or for float32 the rounding of exp arguments, which reach
    about -100 here (100 * 2^-24 ~ 6e-6 relative to the exp)."""
    return 2.0**-8 if dtype == torch.bfloat16 else 1e-5


# --- state passing: s_0 = s_in, s_{k+1} = decay_k s_k + u_k -------------------------------------

def state_passing_inputs(dtype, b=2, c=5, g=2, n=3, hg=4, p=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(b, c, g, hg, p, n, generator=gen).to(dtype)
    decay = torch.rand(b, c, g, hg, generator=gen)
    s_in = torch.randn(b, g, hg, p, n, generator=gen)
    return u, decay, s_in


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_passing_matches_the_recurrence_and_its_twin_bit_for_bit(dtype):
    u, decay, s_in = state_passing_inputs(dtype)
    states, s_out = ops().state_passing(u, decay, s_in)
    c = u.shape[1]
    twin_states, twin_out = ssd._StatePassing.apply(u, decay[..., None, None], s_in)
    assert states.dtype == dtype and s_out.dtype == torch.float32
    assert torch.equal(states, twin_states) and torch.equal(s_out, twin_out)
    s = s_in.double()
    for k in range(c):
        torch.testing.assert_close(states[:, k].double(), s, rtol=rounding(dtype), atol=1e-6)
        s = decay[:, k, :, :, None, None].double() * s + u[:, k].double()
    torch.testing.assert_close(s_out.double(), s, rtol=1e-6, atol=1e-6)


def test_state_passing_keeps_nan_and_a_float32_carry():
    u, decay, s_in = state_passing_inputs(torch.bfloat16, c=40)
    u[0, 3, 1, 2, 5, 0] = float("nan")
    decay.fill_(1.0)  # no decay: bfloat16 rounding of a carried state would compound over 40 chunks
    s_in.fill_(1.0)
    u[~u.isnan()] = 2.0**-10  # below half a bfloat16 step of 1: a bfloat16 carry would never move
    states, s_out = ops().state_passing(u, decay, s_in)
    assert states[0, 4:, 1, 2, 5, 0].isnan().all() and s_out[0, 1, 2, 5, 0].isnan()
    assert states.isnan().sum() == 40 - 4 and s_out.isnan().sum() == 1  # no other value touched
    torch.testing.assert_close(s_out[1], torch.full_like(s_out[1], 1 + 40 * 2.0**-10))


# --- the elementwise stages of a slab of the chunked scan --------------------------------------

def slab_inputs(dtype, b=2, c=3, q=8, h=4, p=5, g=2, seed=0):
    """Inputs as _slab_scan has them: x a strided slice of a wider projection, a non-increasing
    log-decay a (cumulative dt * A with A < 0) reaching below -87 so exp underflows somewhere."""
    gen = torch.Generator().manual_seed(seed)
    wide = torch.randn(b, c * q, h * p + 11, generator=gen).to(dtype)
    x = wide[..., 3:3 + h * p].unflatten(-1, (h, p)).unflatten(1, (c, q))  # [b, c, q, h, p], strided
    dt = torch.rand(b, c, q, h, generator=gen) * 2
    a = torch.cumsum(-dt * torch.linspace(1, 16, h), dim=2)
    cb = torch.randn(b, c, g, q, q, generator=gen).to(dtype)
    return x, dt, a, cb


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunk_stages_compute_their_formulas(dtype):
    x, dt, a, cb = slab_inputs(dtype)
    b, c, q, h, p = x.shape
    g = cb.shape[2]
    X, T, A, CB = x.double(), dt.double(), a.double(), cb.double()
    x_dt, x_end = ops().chunk_inputs(x.flatten(1, 2).flatten(2), dt, a)
    assert x_dt.dtype == x_end.dtype == dtype and x_dt.shape == (b, c, h, q, p) and x_end.shape == (b, c, h, p, q)
    want = X * T[..., None]  # [b, c, q, h, p]
    torch.testing.assert_close(x_dt.double(), want.transpose(2, 3), rtol=rounding(dtype), atol=1e-30)
    want = want * torch.exp(A[:, :, -1:] - A)[..., None]
    torch.testing.assert_close(x_end.double(), want.permute(0, 1, 3, 4, 2), rtol=rounding(dtype), atol=1e-30)

    scores = ops().chunk_scores(a, cb)
    seg = A.transpose(2, 3)[..., :, None] - A.transpose(2, 3)[..., None, :]  # [b, c, h, q, q]
    want = torch.exp(seg.clamp(max=0)) * CB.repeat_interleave(h // g, dim=2) * torch.ones(q, q).tril().double()
    assert scores.dtype == dtype
    torch.testing.assert_close(scores.double(), want, rtol=rounding(dtype), atol=1e-30)
    assert torch.equal(scores.triu(1), torch.zeros_like(scores))  # masked entries exactly zero

    y_diag = torch.randn(b, c, h, q, p).to(dtype)
    y_off = torch.randn(b, c, h, p, q).to(dtype)
    D = torch.randn(h, p)
    whole = torch.full((b, c * q + 3, h * p), 7.0, dtype=dtype)  # the slab's outputs go into a part of it
    ops().chunk_outputs(y_diag, y_off, a, x.flatten(1, 2).flatten(2), D, whole[:, 2:2 + c * q])
    y = whole[:, 2:2 + c * q].unflatten(-1, (h, p)).unflatten(1, (c, q))  # [b, c, q, h, p]
    terms = [y_diag.double().transpose(2, 3), torch.exp(A)[..., None] * y_off.double().permute(0, 1, 4, 2, 3),
             D.double() * X]
    size = sum(t.abs() for t in terms)  # the sum's terms may cancel: bound the error by their sizes
    assert ((y.double() - sum(terms)).abs() <= rounding(dtype) * size + 1e-30).all()
    assert (whole[:, :2] == 7).all() and (whole[:, 2 + c * q:] == 7).all()  # nothing written outside it


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunk_stages_agree_with_their_twins(dtype, monkeypatch):
    """Same stages through ssd's helpers with the kernels and without: float32 rounding apart, or
    a few bfloat16 roundings (the twins round after every operation, the kernels once)."""
    x, dt, a, cb = slab_inputs(dtype)
    b, c, q, h, p = x.shape
    y_diag, y_off, D = torch.randn(b, c, h, q, p).to(dtype), torch.randn(b, c, h, p, q).to(dtype), torch.randn(h, p)

    def stages():
        y = torch.empty(b, c * q + 1, h, p, dtype=dtype)[:, 1:].unflatten(1, (c, q))  # a view, as _slab_scan gives
        ssd._chunk_outputs(y_diag, y_off, a, x, D, y)
        return (*ssd._chunk_inputs(x, dt, a), ssd._chunk_scores(a, cb), y)

    native = stages()
    monkeypatch.setattr(mamba2_native, "_library", lambda: None)
    twin = stages()
    tol = dict(rtol=4 * rounding(dtype), atol=1e-5 if dtype == torch.float32 else 2.0**-6)
    for got, want in zip(native, twin):
        torch.testing.assert_close(got.float(), want.float(), **tol)


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
    u, decay, s_in = state_passing_inputs(torch.float32)
    with caplog.at_level(logging.INFO, logger="model.mamba2"):
        assert mamba2_native.kernels("stage", u, decay) is not None
        assert mamba2_native.kernels("stage", u.requires_grad_(), decay) is None
        with torch.no_grad():
            assert mamba2_native.kernels("stage", u, decay) is not None
        assert mamba2_native.kernels("stage", u.detach().double(), decay) is None
        monkeypatch.setattr(mamba2_native, "_library", lambda: None)
        assert mamba2_native.kernels("stage", u.detach(), decay) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "model.mamba2"]
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
