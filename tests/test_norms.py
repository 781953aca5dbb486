"""The blocks' pre-norm and residual add (model/norms.py, csrc/norms.cpp) against float64 evaluations
of their formulas and against their PyTorch twins, and whole blocks with and without the kernels."""

import logging

import pytest
import torch
from torch import nn

from model import fast_path, native_kernels, norms
from model.config import MambaConfig
from model.mamba2 import Mamba2Block
from model.transformer import TransformerBlock

DTYPES = [torch.float32, torch.bfloat16]
WIDTHS = [24, 100, 1024]  # 100: not a multiple of the kernel's 16 lanes


def make_norm(kind: str, width: int, seed: int) -> nn.Module:
    norm = nn.LayerNorm(width, bias=False) if kind == "layer" else nn.RMSNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(seed))
    return norm


def residual(width: int, seed: int, rows: int = 3 * 7) -> torch.Tensor:
    """[3, 7, width] (an odd number of rows) with an offset and a spread, as a residual stream has."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows // 7, 7, width, generator=gen) * 3 + torch.randn(width, generator=gen)).float()


def formula(norm: nn.Module, s: torch.Tensor) -> torch.Tensor:
    s = s.double()
    centred = s - s.mean(-1, keepdim=True) if isinstance(norm, nn.LayerNorm) else s
    return centred / torch.sqrt(centred.square().mean(-1, keepdim=True) + norm.eps) * norm.weight.double()


def assert_rounded_from(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """got is want (float64) computed in float32 and stored in `dtype`: within float32 arithmetic's
    error (statistics summed over up to 1024 values), or for bfloat16 one rounding (2^-9, doubled
    for the float32 error that can move a value across a rounding boundary)."""
    assert got.dtype == dtype and got.shape == want.shape
    rtol = 2.0**-8 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_pre_norm_computes_its_formula_and_rounds_once(kind, width, dtype):
    norm, x = make_norm(kind, width, 1), residual(width, 2)
    with torch.no_grad():
        out, twin = norms.pre_norm(norm, x, dtype), norms.pre_norm_ref(norm, x, dtype)
        as_float32 = norms.pre_norm(norm, x, torch.float32)
    assert_rounded_from(out, formula(norm, x), dtype)
    # The bfloat16 output is the float32 one rounded once, as autocast rounds a float32 norm's output.
    assert torch.equal(out, as_float32.to(dtype))
    torch.testing.assert_close(out.float(), twin.float(), rtol=2.0**-8 if dtype == torch.bfloat16 else 2e-6,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_add_pre_norm_sums_exactly_then_normalises(kind, width, dtype):
    norm, x = make_norm(kind, width, 3), residual(width, 4)
    y = (torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) * 0.5).to(dtype)  # a branch's output
    with torch.no_grad():
        s, out = norms.add_pre_norm(norm, x, y, dtype)
        s_twin, out_twin = norms.add_pre_norm_ref(norm, x, y, dtype)
        separate = norms.pre_norm(norm, s, torch.float32)
    assert s.dtype == torch.float32 and torch.equal(s, x + y.float())  # one float32 addition per element
    assert_rounded_from(out, formula(norm, s), dtype)
    assert torch.equal(out, separate.to(dtype))
    torch.testing.assert_close(out.float(), out_twin.float(), rtol=2.0**-8 if dtype == torch.bfloat16 else 2e-6,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_add_is_the_float32_sum(dtype):
    x = residual(100, 6, rows=3 * 7 * 5)
    y = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    with torch.no_grad():
        out = norms.residual_add(x, y)
    assert out.dtype == torch.float32 and torch.equal(out, (x.double() + y.double()).float())


def test_the_twins_run_for_gradients_biases_and_other_dtypes(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    norm, x = make_norm("layer", 24, 8), residual(24, 9)
    with caplog.at_level(logging.INFO):
        x_grad = x.clone().requires_grad_()
        norms.pre_norm(norm, x_grad, torch.bfloat16).float().sum().backward()  # gradients reach x and the weight
        assert x_grad.grad is not None and norm.weight.grad is not None
        with torch.no_grad():
            norms.pre_norm(nn.LayerNorm(24), x, torch.float32)  # with a bias
            norms.residual_add(x.double(), x.double())
            norms.pre_norm(norm, x, torch.float32)
    messages = [r.getMessage() for r in caplog.records if r.name in ("model.norms", "model.native_kernels")]
    assert messages == [
        "pre-norm: PyTorch (gradients needed)",
        "pre-norm: PyTorch (a norm with a bias, without a weight or over several dims)",
        "residual add: PyTorch (torch.float64 residual, torch.float64 branch output, torch.float32 output)",
        "pre-norm: native CPU kernel",
    ]


def blocks(width: int) -> list[nn.Module]:
    torch.manual_seed(width)
    mamba = Mamba2Block(width, MambaConfig(d_state=16, headdim=16, cpu_chunk_size=16))
    return [TransformerBlock(width, head_dim=16), mamba]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [48, 64])
def test_blocks_with_and_without_kernels_agree(width, dtype, monkeypatch):
    """Whole blocks, weights converted as LongLRM.set_precision does, on an odd number of tokens: the
    native kernels against the PyTorch twins. The branch's contribution (output - input) is compared,
    relative to its largest value: float32 roundings of the residual apart, which is ~20x larger than
    the contribution of these random blocks (measured up to 1e-5), or for bfloat16 a rounding of the
    branch's input that flips differently and propagates (measured up to 0.5%)."""
    x = residual(width, 10, rows=37 * 7)[None].flatten(1, 2)  # [1, 111, width]
    for block in blocks(width):
        for module in block.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)
        with torch.no_grad():
            native = block(x) - x
            with monkeypatch.context() as patch:
                patch.setattr(native_kernels, "_library", lambda: None)
                twin = block(x) - x
        scale = twin.abs().max().item()
        tol = 0.02 if dtype == torch.bfloat16 else 4e-5
        assert (native - twin).abs().max().item() <= tol * scale, type(block).__name__
