import logging

import pytest
import torch

from model import fast_path, transformer
from model.config import ModelConfig
from model.transformer import TransformerBlock, attention, attention_ref


def naive_attention(q, k, v):
    """Loop over batch and heads: softmax(q k^T / sqrt(d)) v, written out with exp and sums."""
    b, l, h, d = q.shape
    out = torch.empty_like(q)
    for i in range(b):
        for j in range(h):
            logits = q[i, :, j] @ k[i, :, j].T / d**0.5  # [L, L]
            weights = torch.exp(logits - logits.max(-1, keepdim=True).values)
            out[i, :, j] = (weights / weights.sum(-1, keepdim=True)) @ v[i, :, j]
    return out


def test_sdpa_and_reference_match_naive_softmax_attention(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 37, 3, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = naive_attention(q, k, v)
    with caplog.at_level(logging.INFO, logger="model.transformer"):
        got = attention(q, k, v)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(attention_ref(q, k, v), expected, rtol=1e-10, atol=1e-10)
    reason = transformer.native_blocker(torch.cpu.get_capabilities(), True, q.dtype, 16)  # float64, on CPU
    assert [r.getMessage() for r in caplog.records if r.name == "model.transformer"] == [
        f"attention: torch scaled_dot_product_attention ({reason})"]


def test_block_splits_qkv_as_three_by_heads_by_channels():
    torch.manual_seed(0)
    dim, head_dim = 32, 8
    block = TransformerBlock(dim, head_dim).double()
    x = torch.randn(2, 10, dim, dtype=torch.float64)
    with torch.no_grad():
        h = block.norm1(x)
        wq, wk, wv = block.attn.qkv.weight.split(dim)  # rows: all of q, then k, then v
        q, k, v = ((h @ w.T).unflatten(-1, (dim // head_dim, head_dim)) for w in (wq, wk, wv))
        x1 = x + naive_attention(q, k, v).flatten(-2) @ block.attn.proj.weight.T
        h2 = block.norm2(x1)
        expected = x1 + torch.nn.functional.gelu(h2 @ block.mlp.fc1.weight.T) @ block.mlp.fc2.weight.T
        torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_official_layout_and_init():
    block = TransformerBlock(256, 64)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {"norm1.weight": (256,), "attn.qkv.weight": (768, 256), "attn.proj.weight": (256, 256),
                      "norm2.weight": (256,), "mlp.fc1.weight": (1024, 256), "mlp.fc2.weight": (256, 1024)}
    assert abs(block.mlp.fc1.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("available, device, capability, dtype, head_dim, fragment", [
    (True, "cuda", (8, 0), torch.bfloat16, 64, None),  # A100
    (True, "cuda", (8, 6), torch.float16, 16, None),  # RTX 30xx, the `tiny` head dim
    (True, "cuda", (9, 0), torch.bfloat16, 256, None),  # H100, the largest head dim
    (True, "cuda", (12, 0), torch.bfloat16, 8, None),
    (True, "cuda", (7, 5), torch.bfloat16, 64, "compute capability 7.5"),  # T4
    (True, "cuda", (7, 0), torch.float16, 64, "compute capability 7.0"),  # V100
    (True, "cuda", (8, 0), torch.float32, 64, "float32 inputs"),
    (True, "cuda", (8, 0), torch.float64, 64, "float64 inputs"),
    (True, "cuda", (8, 0), torch.bfloat16, 12, "head dim 12"),
    (True, "cuda", (8, 0), torch.bfloat16, 264, "head dim 264"),
    (False, "cuda", (8, 0), torch.bfloat16, 64, "flash_attn does not import"),
    (True, "cpu", None, torch.bfloat16, 64, "running on cpu"),
])
def test_flash_rule(available, device, capability, dtype, head_dim, fragment):
    """flash-attn 2's own checks (csrc/flash_attn/flash_api.cpp): sm80+, fp16/bf16, head dim % 8 == 0 and <= 256."""
    blocker = transformer.flash_blocker(available, device, capability, dtype, head_dim)
    assert blocker is None if fragment is None else fragment in blocker


def test_unavailable_flash_request_is_an_error():
    q = torch.randn(1, 4, 2, 8)
    if transformer.flash_attn_func is not None and torch.cuda.is_available():
        pytest.skip("flash-attn present")
    with pytest.raises(RuntimeError, match="'flash' requested but flash-attn cannot run: running on cpu"):
        attention(q, q, q, backend="flash")


def test_config_validates_the_head_dim():
    ModelConfig(dim=192, merged_dim=384, attn_head_dim=12)  # SDPA takes any head dim
    ModelConfig(attn_head_dim=256, dim=256, merged_dim=1024, attention_backend="flash")
    with pytest.raises(ValueError, match="attn_head_dim must be positive"):
        ModelConfig(attn_head_dim=0)
    with pytest.raises(ValueError, match="multiple of 8 up to 256"):
        ModelConfig(dim=192, merged_dim=384, attn_head_dim=12, attention_backend="flash")
    with pytest.raises(ValueError, match="multiple of 8 up to 256"):
        ModelConfig(dim=512, merged_dim=1024, attn_head_dim=512, attention_backend="flash")


@pytest.mark.skipif(not (torch.cuda.is_available() and transformer.flash_attn_func is not None),
                    reason="needs CUDA and flash-attn")
def test_flash_matches_sdpa():
    if torch.cuda.get_device_capability() < transformer.FLASH_MIN_CAPABILITY:
        pytest.skip("flash-attn 2 needs compute capability 8.0")
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, backend="flash"), attention(q, k, v, backend="sdpa"),
                               rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("head_dim", [16, 64])
def test_auto_attention_runs_on_any_gpu(head_dim):
    """Whatever this GPU and its packages allow (flash-attn or SDPA), bf16 attention agrees with fp32."""
    q, k, v = (torch.randn(2, 300, 4, head_dim, device="cuda") for _ in range(3))
    got = attention(*(t.bfloat16() for t in (q, k, v)))
    torch.testing.assert_close(got.float(), attention_ref(q, k, v), rtol=3e-2, atol=3e-2)
