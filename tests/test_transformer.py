import logging

import pytest
import torch

from model import fast_path, transformer
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
    assert any("scaled_dot_product_attention" in r.getMessage() for r in caplog.records)


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


def test_unavailable_flash_request_is_an_error():
    q = torch.randn(1, 4, 2, 8)
    if transformer.flash_attn_func is not None and torch.cuda.is_available():
        pytest.skip("flash-attn present")
    with pytest.raises(RuntimeError, match="'flash' requested"):
        attention(q, q, q, backend="flash")


@pytest.mark.skipif(not (torch.cuda.is_available() and transformer.flash_attn_func is not None),
                    reason="needs CUDA and flash-attn")
def test_flash_matches_sdpa():
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, backend="flash"), attention(q, k, v, backend="sdpa"),
                               rtol=2e-2, atol=2e-2)
