"""Pre-norm transformer block over the whole multi-view token sequence (official layout, no biases).

Attention runs through flash-attn where it can (it imports, CUDA tensors in fp16/bf16, an Ampere or
newer GPU, a head dim it supports: `flash_blocker`), on CPU through the native flash-attention kernel
of csrc/attention.cpp where it can (no gradient, float32 / bfloat16, an AVX-512 CPU, a head dim it
supports: `native_blocker`), otherwise through PyTorch's scaled_dot_product_attention (which has its
own fused CPU and CUDA kernels).
`attention_ref` is the plain softmax formula, the test oracle. The pre-norms and residual adds
between the float32 residual stream and the branches are model/norms.py's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import native_kernels
from model.fast_path import cuda_capability, log_choice
from model.norms import add_pre_norm, pre_norm, residual_add

try:
    from flash_attn import flash_attn_func
except Exception:  # CPU-only machines: flash-attn is a CUDA-only extra
    flash_attn_func = None


def attention_ref(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v with q, k, v [B, L, H, d]; returns [B, L, H, d]."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


# flash-attn 2.x's limits, from csrc/flash_attn/flash_api.cpp (2.8.3), forward and backward alike:
# "FlashAttention only supports Ampere GPUs or newer" (compute capability major >= 8), "only support
# fp16 and bf16 data type", "head dimension at most 256", a head size "that is a multiple of 8".
# (Its Python wrapper zero-pads other head sizes to a multiple of 8; a copy per call, so not taken.)
FLASH_MIN_CAPABILITY = (8, 0)
FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256


def flash_blocker(available: bool, device_type: str, capability: tuple[int, int] | None, dtype: torch.dtype,
                  head_dim: int) -> str | None:
    """Why flash-attn cannot run attention on these inputs; None if it can.

    A plain function of the facts it needs, so the rule is checked on machines without a GPU.
    """
    if device_type != "cuda":
        return f"running on {device_type}"
    if not available:
        return "flash_attn does not import"
    if capability is not None and capability < FLASH_MIN_CAPABILITY:
        return f"compute capability {capability[0]}.{capability[1]}: flash-attn 2 needs 8.0 (Ampere) or newer"
    if dtype not in FLASH_DTYPES:
        return f"{str(dtype).removeprefix('torch.')} inputs: flash-attn takes float16 or bfloat16 (bf16 precision)"
    if head_dim % 8 or head_dim > FLASH_MAX_HEAD_DIM:
        return f"head dim {head_dim}: flash-attn takes multiples of 8 up to {FLASH_MAX_HEAD_DIM}"
    return None


# csrc/attention.cpp's limits: AVX-512 (F, BW, VL, DQ) for its softmax and AVX512-BF16 for its bfloat16
# roundings; oneDNN's micro-kernels for its products (off with torch.backends.mkldnn); float32 or bfloat16;
# an even head dim (bfloat16 products pair channels) up to 256.
NATIVE_DTYPES = (torch.float32, torch.bfloat16)
NATIVE_CPU_FLAGS = ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq")
NATIVE_MAX_HEAD_DIM = 256


def native_blocker(capabilities: dict, mkldnn_enabled: bool, dtype: torch.dtype, head_dim: int) -> str | None:
    """Why the native CPU kernel cannot run attention on these inputs; None if it can.

    `capabilities` is `torch.cpu.get_capabilities()` for this CPU, or a dict to decide for another.
    """
    if dtype not in NATIVE_DTYPES:
        return f"{str(dtype).removeprefix('torch.')} inputs: the native kernel takes float32 or bfloat16"
    if head_dim % 2 or head_dim > NATIVE_MAX_HEAD_DIM:
        return f"head dim {head_dim}: the native kernel takes even ones up to {NATIVE_MAX_HEAD_DIM}"
    flags = NATIVE_CPU_FLAGS + (("avx512_bf16",) if dtype == torch.bfloat16 else ())
    missing = [flag for flag in flags if not capabilities.get(flag)]
    if missing:
        return f"CPU lacks {', '.join(missing)} (native kernel)"
    if not mkldnn_enabled:
        return "torch.backends.mkldnn is disabled (it runs the native kernel's products)"
    return None


_cpu_capabilities = functools.cache(torch.cpu.get_capabilities)


def native_blocker_here(dtype: torch.dtype, head_dim: int) -> str | None:
    """`native_blocker` for this CPU and the current torch.backends.mkldnn setting."""
    return native_blocker(_cpu_capabilities(), torch.backends.mkldnn.enabled, dtype, head_dim)


def attention(q: Tensor, k: Tensor, v: Tensor, backend: str = "auto") -> Tensor:
    """Full (non-causal) attention, q, k, v [B, L, H, d] -> [B, L, H, d]; backend auto | flash | sdpa.

    "auto" takes flash-attn where `flash_blocker` allows, on CPU the native kernel where
    `native_blocker` allows (and no gradient is needed), and SDPA otherwise, logging why once;
    "flash" is an error where flash-attn cannot run.
    """
    if backend not in ("auto", "flash", "sdpa"):
        raise ValueError(f"unknown attention backend {backend!r}; valid: 'auto', 'flash', 'sdpa'")
    blocker = "requested" if backend == "sdpa" else flash_blocker(
        flash_attn_func is not None, q.device.type, cuda_capability(q.device), q.dtype, q.shape[-1])
    if blocker is None:
        log_choice("model.transformer", "attention: flash-attn flash_attn_func")
        return flash_attn_func(q, k, v)
    if backend == "flash":
        raise RuntimeError(f"attention backend 'flash' requested but flash-attn cannot run: {blocker}")
    if backend == "auto" and q.device.type == "cpu":
        blocker = native_blocker_here(q.dtype, q.shape[-1])
        ops = native_kernels.kernels("attention", q, k, v) if blocker is None else None  # (logs its choice)
        if ops is not None:
            return ops.attention(q, k, v)
        blocker = blocker or "the native kernel declined, as logged by model.native_kernels"
    log_choice("model.transformer", f"attention: torch scaled_dot_product_attention ({blocker})")
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, L, d] views
    if q.device.type == "cpu":
        # The CPU kernel reads q in place (it packs k and v blocks itself): q's rows contiguous run it
        # 5-10% faster at the paper's sizes than rows 3*D apart in the qkv projection, for a copy of q.
        q = q.contiguous()
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, head_dim: int, backend: str = "auto"):
        super().__init__()
        self.heads, self.head_dim, self.backend = dim // head_dim, head_dim, backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # output features ordered [q|k|v][head][channel]
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # x [B, L, D]
        qkv = self.qkv(x.to(self.qkv.weight.dtype))  # in the weight's dtype
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.head_dim)).unbind(2)  # each [B, L, H, d]
        return self.proj(attention(q, k, v, self.backend).flatten(-2))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim, bias=False)
        self.act = nn.GELU()  # exact (erf) GELU, as the official nn.GELU()
        self.fc2 = nn.Linear(ratio * dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.to(self.fc1.weight.dtype))))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, head_dim: int = 64, mlp_ratio: int = 4, backend: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, bias=False)
        self.attn = SelfAttention(dim, head_dim, backend)
        self.norm2 = nn.LayerNorm(dim, bias=False)
        self.mlp = MLP(dim, mlp_ratio)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # official init for transformer linears
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # x [B, L, D] is the float32 residual stream; the branches compute in their weights' dtype
        x, h = add_pre_norm(self.norm2, x, self.attn(pre_norm(self.norm1, x, self.attn.qkv.weight.dtype)),
                            self.mlp.fc1.weight.dtype)
        return residual_add(x, self.mlp(h))
