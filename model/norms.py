"""The residual blocks' pre-norm and residual add, between the float32 residual stream and a branch
that computes in its weights' dtype.

A block normalises the residual x with its own nn.LayerNorm (no bias: the transformer blocks, the
tokenizer's and the head's norms) or nn.RMSNorm (the Mamba2 blocks), hands the result to its branch
in the dtype of the branch's weights, and adds the branch's output back in float32. In PyTorch that
is the norm's passes over the residual, a conversion pass, and on the way back another conversion
and the add. Without gradients on CPU one native pass does each (csrc/norms.cpp): float32
statistics, the output rounded once; `add_pre_norm` also fuses a residual add with the norm that
reads its result (the transformer block's second norm). The modules keep their parameters and
state-dict names; the `_ref` twins are the PyTorch formulas, which run wherever a gradient is
needed or the tensors are not CPU float32, and are the tests' oracles.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model import native_kernels
from model.fast_path import log_choice

Norm = nn.LayerNorm | nn.RMSNorm


def _eps(norm: Norm, dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps if norm.eps is None else norm.eps  # nn.RMSNorm's default


KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def _native(what: str, x: Tensor, y: Tensor | None = None, norm: Norm | None = None,
            dtype: torch.dtype = torch.float32):
    """The native library if its kernel can take these: a float32 residual x, a branch output y and an
    output dtype in float32 or bfloat16, a norm with a weight and no bias over the last dim; else None."""
    tensors = [t for t in (x, y, None if norm is None else norm.weight) if t is not None]
    if y is not None and y.shape != x.shape:
        reason = f"branch output {tuple(y.shape)} broadcast onto the residual {tuple(x.shape)}"
    elif x.dtype != torch.float32 or dtype not in KERNEL_DTYPES or (y is not None and y.dtype not in KERNEL_DTYPES):
        reason = f"{x.dtype} residual, {None if y is None else y.dtype} branch output, {dtype} output"
    elif norm is not None and (norm.weight is None or getattr(norm, "bias", None) is not None
                               or len(norm.normalized_shape) != 1):
        reason = "a norm with a bias, without a weight or over several dims"
    else:
        return native_kernels.kernels(what, *tensors)
    log_choice("model.norms", f"{what}: PyTorch ({reason})")
    return None


def pre_norm_ref(norm: Norm, x: Tensor, dtype: torch.dtype) -> Tensor:
    return norm(x).to(dtype)


def pre_norm(norm: Norm, x: Tensor, dtype: torch.dtype) -> Tensor:
    """norm(x) in `dtype`: x [..., D] float32 residual -> [..., D]."""
    ops = _native("pre-norm", x, norm=norm, dtype=dtype)
    if ops is None:
        return pre_norm_ref(norm, x, dtype)
    d = x.shape[-1]
    out = ops.pre_norm(x.reshape(-1, d).contiguous(), norm.weight.float().contiguous(), _eps(norm, x.dtype),
                       isinstance(norm, nn.LayerNorm), dtype)
    return out.view(x.shape)


def residual_add_ref(x: Tensor, y: Tensor) -> Tensor:
    return x + y.to(x.dtype)


def residual_add(x: Tensor, y: Tensor) -> Tensor:
    """x + y in x's dtype (float32): x the residual, y a branch's output [..., D] in its own dtype."""
    ops = _native("residual add", x, y)
    if ops is None:
        return residual_add_ref(x, y)
    return ops.residual_add(x.contiguous(), y.contiguous())


def add_pre_norm_ref(norm: Norm, x: Tensor, y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    s = residual_add_ref(x, y)
    return s, pre_norm_ref(norm, s, dtype)


def add_pre_norm(norm: Norm, x: Tensor, y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(s = x + y, norm(s) in `dtype`): `residual_add` then `pre_norm`, reading the sum once."""
    ops = _native("residual add + pre-norm", x, y, norm, dtype)
    if ops is None:
        return add_pre_norm_ref(norm, x, y, dtype)
    d = x.shape[-1]
    weight = norm.weight.float().contiguous()
    s, out = ops.add_pre_norm(x.reshape(-1, d).contiguous(), y.reshape(-1, d).contiguous(), weight, _eps(norm, x.dtype),
                              isinstance(norm, nn.LayerNorm), dtype)
    return s.view(x.shape), out.view(x.shape)
