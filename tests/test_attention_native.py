"""The native CPU attention kernel (csrc/attention.cpp) against float64 evaluations of the softmax
formula (`attention_ref`) and against torch's scaled_dot_product_attention, and its dispatch rule."""

import logging

import pytest
import torch
import torch.nn.functional as F

from model import fast_path, native_kernels, transformer
from model.transformer import attention, attention_ref


def blocker(dtype: torch.dtype, head_dim: int = 64) -> str | None:
    return transformer.native_blocker(torch.cpu.get_capabilities(), torch.backends.mkldnn.enabled, dtype, head_dim)


def kernel(dtype: torch.dtype):
    """torch.ops.network_cpu, or a skip where this CPU cannot run the kernel on `dtype` inputs (a
    library that does not build fails)."""
    reason = blocker(dtype)
    if reason is not None:
        pytest.skip(f"native attention unavailable here: {reason}")
    ops = native_kernels.kernels("attention", torch.zeros(1, dtype=dtype))
    assert ops is not None, "the native kernels did not build (see the model.mamba2 warning)"
    return ops


def qkv_views(b: int, length: int, heads: int, d: int, dtype: torch.dtype, seed: int, scale: float = 1.0):
    """q, k, v [b, L, H, d] as the transformer block has them: strided views of one projection
    [b, L, 3 * H * d] (rows 3 H d apart)."""
    gen = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(b, length, 3 * heads * d, generator=gen) * scale).to(dtype)
    return qkv.unflatten(-1, (3, heads, d)).unbind(2)


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def bf16_bound(q, k, v) -> torch.Tensor:
    """Largest error of a bfloat16 result, elementwise, from exact (float64) arithmetic on the same
    bfloat16 inputs. The kernel rounds each exponential p_j to bfloat16 (relative error at most
    u = 2^-8) before the second product, keeps their sum unrounded, and rounds the output once:
    out = sum_j p_j (1 + e_j) v_j / sum_j p_j, then (1 + e) out, so
    |out - ref| <= u sum_j w_j |v_j| + u |ref| (w the softmax weights), to first order. Everything
    else (float32 products of bfloat16 values, float32 sums, a 3e-6 exp) is far below; 10% slack covers it."""
    q, k, v = q.double(), k.double(), v.double()
    weights = (torch.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5).softmax(-1)
    spread = torch.einsum("bhqk,bkhd->bqhd", weights, v.abs())
    ref = torch.einsum("bhqk,bkhd->bqhd", weights, v)
    return 1.1 * 2.0**-8 * (spread + ref.abs()) + 1e-7


SHAPES = [  # (B, L, H, d): L below, at and across the 256-key blocks and 256-row tasks, odd; several d
    (1, 1, 1, 64),
    (2, 5, 3, 16),
    (1, 37, 2, 18),  # d not a multiple of the 16 lanes
    (2, 256, 2, 64),
    (1, 257, 4, 64),
    (1, 700, 2, 128),
    (1, 301, 1, 256),
]


def kernel_and_oracle(shape, dtype):
    """q, k, v of `shape` in `dtype`, the kernel's output (checked for dtype, shape, layout) and the
    float64 formula on the same inputs."""
    ops = kernel(dtype)
    q, k, v = qkv_views(*shape, dtype, seed=sum(shape), scale=2.0)
    with torch.no_grad():
        got = ops.attention(q, k, v)
    assert got.dtype == dtype and got.shape == q.shape and got.is_contiguous()
    return q, k, v, got.double(), attention_ref(q.double(), k.double(), v.double())


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_the_formula_as_closely_as_sdpa(shape):
    q, k, v, got, ref = kernel_and_oracle(shape, torch.float32)
    # Float32 rounding of d-term scores (logits of several units here) and L-term sums.
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=3e-6 * v.abs().max().item())
    # ... and no worse than torch's own fused CPU kernel, within a float32 ulp of the output range.
    sdpa_err = (sdpa(q, k, v).double() - ref).abs().max().item()
    assert (got - ref).abs().max().item() <= 1.5 * sdpa_err + 1e-7 * v.abs().max().item()


@pytest.mark.parametrize("shape", SHAPES)
def test_bfloat16_is_within_its_rounding_bound_of_the_formula(shape):
    q, k, v, got, ref = kernel_and_oracle(shape, torch.bfloat16)
    bound = bf16_bound(q, k, v)
    assert ((got - ref).abs() <= bound).all(), ((got - ref).abs() / bound).max()
    # torch's kernel makes the same roundings, so it meets the same bound (the bound is not loose for
    # it), and the two agree within twice of it.
    assert ((sdpa(q, k, v).double() - ref).abs() <= bound).all()
    assert ((got - sdpa(q, k, v).double()).abs() <= 2 * bound).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("growth", ["rising", "falling"])
def test_large_logits_with_the_maximum_moving_across_key_blocks(dtype, growth):
    """Logits up to ~100: keys' norms rising along the sequence take later blocks' logits so far
    above the first block's maximum (over 64 in log2 units, the kernel's slack) that rows are
    redone and the accumulator rescaled; falling, the first block holds the largest logits."""
    ops = kernel(dtype)
    b, length, heads, d = 1, 1100, 2, 64
    q, k, v = qkv_views(b, length, heads, d, torch.float32, seed=3)
    ramp = torch.linspace(0.2, 3.0, length)[:, None, None]
    k = k * (ramp if growth == "rising" else ramp.flip(0))
    q = q * 6.0
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    with torch.no_grad():
        got = ops.attention(q, k, v)
    ref = attention_ref(q.double(), k.double(), v.double())
    logits = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * d**-0.5
    assert logits.abs().max() > 60  # the regime this test is about
    if dtype == torch.float32:
        # The scores' float32 rounding is relative to the logits (~100), so the weights' error is
        # ~100 x 6e-8 relative.
        torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5 * v.abs().max().item())
    else:
        assert ((got.double() - ref).abs() <= bf16_bound(q, k, v)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_any_strides_and_thread_count_give_the_same_bits(dtype):
    """Contiguous [B, L, H, d], [B, H, L, d] transposed, and the projection's strided views hold the
    same values: the same output, bit for bit, with one thread or two (tasks are independent)."""
    ops = kernel(dtype)
    q, k, v = qkv_views(2, 300, 3, 32, dtype, seed=7)
    threads = torch.get_num_threads()
    with torch.no_grad():
        got = ops.attention(q, k, v)
        assert torch.equal(ops.attention(q.contiguous(), k.contiguous(), v.contiguous()), got)
        heads_first = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]  # [B, H, L, d] storage
        assert torch.equal(ops.attention(*heads_first), got)
        try:
            torch.set_num_threads(1 if threads > 1 else 2)
            assert torch.equal(ops.attention(q, k, v), got)
        finally:
            torch.set_num_threads(threads)


def test_attention_takes_the_kernel_on_cpu_without_gradients(caplog, monkeypatch):
    kernel(torch.bfloat16)
    monkeypatch.setattr(fast_path, "_reported", set())
    q, k, v = qkv_views(1, 50, 2, 64, torch.bfloat16, seed=1)
    with caplog.at_level(logging.INFO):
        with torch.no_grad():
            got = attention(q, k, v)
            forced = attention(q, k, v, backend="sdpa")
        with_grad = attention(*(t.detach().requires_grad_() for t in (q, k, v)))
        odd_head = attention(*(t[..., :63] for t in (q, k, v)))
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("model.native_kernels", "attention: native CPU kernel") in messages
    assert ("model.transformer", "attention: torch scaled_dot_product_attention (requested)") in messages
    assert ("model.native_kernels", "attention: PyTorch (gradients needed)") in messages
    assert ("model.transformer", "attention: torch scaled_dot_product_attention (head dim 63: the native kernel "
            "takes even ones up to 256)") in messages
    bound = bf16_bound(q, k, v)
    ref = attention_ref(q.double(), k.double(), v.double())
    assert ((got.double() - ref).abs() <= bound).all()
    assert ((forced.double() - ref).abs() <= bound).all() and not torch.equal(forced, got)
    assert with_grad.requires_grad and ((with_grad.detach().double() - ref).abs() <= bound).all()
    assert odd_head.shape == (1, 50, 2, 63)


@pytest.mark.parametrize("changes, dtype, head_dim, fragment", [
    ({}, torch.float32, 64, None),
    ({}, torch.bfloat16, 256, None),
    ({}, torch.bfloat16, 2, None),
    ({}, torch.float64, 64, "float64 inputs"),
    ({}, torch.float16, 64, "float16 inputs"),
    ({}, torch.bfloat16, 65, "head dim 65"),
    ({}, torch.float32, 258, "head dim 258"),
    ({"avx512_bf16": False}, torch.float32, 64, None),  # Ice Lake, Skylake-X: float32 only
    ({"avx512_bf16": False}, torch.bfloat16, 64, "CPU lacks avx512_bf16"),
    ({"avx512_f": False, "avx512_bw": False, "avx512_vl": False, "avx512_dq": False, "avx512_bf16": False},
     torch.float32, 64, "CPU lacks avx512_f, avx512_bw, avx512_vl, avx512_dq"),  # AVX2 only
    ({"mkldnn": False}, torch.bfloat16, 64, "torch.backends.mkldnn is disabled"),
])
def test_native_rule(changes, dtype, head_dim, fragment):
    """A Sapphire Rapids CPU's flags, with some taken away."""
    caps = {flag: True for flag in transformer.NATIVE_CPU_FLAGS + ("avx512_bf16", "amx_bf16")}
    caps.update({flag: on for flag, on in changes.items() if flag != "mkldnn"})
    reason = transformer.native_blocker(caps, changes.get("mkldnn", True), dtype, head_dim)
    assert reason is None if fragment is None else fragment in reason
