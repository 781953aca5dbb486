import logging

import pytest
import torch

from model import fast_path, ssd
from model.ssd import chunk_scan, chunk_scan_ref, scan


def make_inputs(b=2, l=40, h=4, p=8, g=1, n=6, seed=0):
    """Random scan inputs in the ranges the model produces (A in [-16, -1] as at init)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen)
    dt = torch.randn(b, l, h, generator=gen) - 1.0
    A = -torch.empty(h).uniform_(1.0, 16.0, generator=gen)
    B = torch.randn(b, l, g, n, generator=gen)
    C = torch.randn(b, l, g, n, generator=gen)
    D = torch.randn(h, generator=gen)
    z = torch.randn(b, l, h, p, generator=gen)
    dt_bias = torch.randn(h, generator=gen) * 0.5
    return x, dt, A, B, C, D, z, dt_bias


# chunk_scan computes in float32; the oracle runs the recurrence in float64 on the same values, so
# differences are chunk_scan's own rounding. The dominant term: decays are exp(a_l - a_s) with a the
# cumulative sum of dt*A inside a chunk, which reaches |a| ~ 10^2 over 16 steps here, so the
# exponent carries an absolute error ~|a| * 2^-24 ~ 1e-5 (measured max 8e-6 on outputs of size
# ~20). 5e-5 leaves headroom for that and is still far below any real defect (a wrong decay, mask
# or offset changes outputs at the 1e-1 level).
RTOL, ATOL = 5e-5, 5e-5


@pytest.mark.parametrize("l, chunk, g, d_shape, slab", [
    (48, 16, 1, "h", None),  # a multiple of the chunk
    (45, 16, 2, "hp", None),  # not a multiple (shorter last chunk), two groups, per-channel D
    (7, 16, 1, "h", None),  # shorter than one chunk
    (53, 8, 1, "h", 1),  # one chunk per slab: the state is handed from slab to slab
])
def test_chunk_scan_matches_recurrence_values_and_grads(l, chunk, g, d_shape, slab, monkeypatch):
    if slab is not None:
        monkeypatch.setattr(ssd, "_SLAB_ELEMENTS", slab)
    x, dt, A, B, C, D, z, dt_bias = make_inputs(l=l, g=g)
    if d_shape == "hp":
        D = torch.randn(x.shape[2], x.shape[3])
    leaves32 = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D, z, dt_bias)]
    leaves64 = [t.double().requires_grad_() for t in (x, dt, A, B, C, D, z, dt_bias)]
    x32, dt32, A32, B32, C32, D32, z32, bias32 = leaves32
    x64, dt64, A64, B64, C64, D64, z64, bias64 = leaves64
    y = chunk_scan(x32, dt32, A32, B32, C32, chunk, D=D32, z=z32, dt_bias=bias32, dt_softplus=True)
    y_ref = chunk_scan_ref(x64, dt64, A64, B64, C64, D=D64, z=z64, dt_bias=bias64, dt_softplus=True)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y.double(), y_ref, rtol=RTOL, atol=ATOL)

    weight = torch.randn(y.shape, dtype=torch.float64)
    grads = torch.autograd.grad((y.double() * weight).sum(), leaves32)
    grads_ref = torch.autograd.grad((y_ref * weight).sum(), leaves64)
    names = ["x", "dt", "A", "B", "C", "D", "z", "dt_bias"]
    for name, got, want in zip(names, grads, grads_ref):
        # Gradients of A, D and dt_bias sum over all b*l*p positions, so scale the tolerance by the
        # gradient's own magnitude rather than using a fixed absolute bound.
        torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-5 * want.abs().max().item(),
                                   msg=lambda m, name=name: f"grad of {name}: {m}")


def test_chunk_scan_without_extras_and_without_softplus():
    x, dt, A, B, C, *_ = make_inputs(l=33)
    dt = dt.abs() * 0.1  # raw positive step sizes
    y = chunk_scan(x, dt, A, B, C, 8)
    y_ref = chunk_scan_ref(*(t.double() for t in (x, dt, A, B, C)))
    torch.testing.assert_close(y.double(), y_ref, rtol=RTOL, atol=ATOL)


def test_chunk_size_does_not_change_results():
    x, dt, A, B, C, D, z, dt_bias = make_inputs(l=70, g=2)
    outs = [chunk_scan(x, dt, A, B, C, q, D=D, dt_bias=dt_bias, dt_softplus=True) for q in (4, 16, 32, 128)]
    # Longer chunks accumulate larger log-decays (see RTOL above): at Q=128 |a| reaches ~10^3,
    # i.e. ~1e-4 absolute error in the exponent; measured 3e-5 on outputs of size ~20.
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], rtol=2e-4, atol=2e-4)


def test_bf16_autocast_keeps_the_scan_in_float32():
    x, dt, A, B, C, D, z, dt_bias = make_inputs(l=50)
    y32 = chunk_scan(x, dt, A, B, C, 16, D=D, dt_bias=dt_bias, dt_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_auto = chunk_scan(x, dt, A, B, C, 16, D=D, dt_bias=dt_bias, dt_softplus=True)
    # float32 inputs under autocast: the same float32 result (matmuls inside are not downcast).
    assert y_auto.dtype == torch.float32
    torch.testing.assert_close(y_auto, y32, rtol=1e-6, atol=1e-6)
    # bfloat16 inputs: the scan of the rounded inputs done in float32, returned as bfloat16, so
    # the only extra error is the final rounding to bfloat16 (8 bits of mantissa).
    bf = [t.bfloat16() for t in (x, dt, B, C)]
    y_bf = chunk_scan(bf[0], bf[1], A, bf[2], bf[3], 16, D=D, dt_bias=dt_bias, dt_softplus=True)
    y_ref = chunk_scan_ref(*(t.double() for t in (bf[0], bf[1], A, bf[2], bf[3])), D=D.double(),
                           dt_bias=dt_bias.double(), dt_softplus=True)
    assert y_bf.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf.double(), y_ref, rtol=2**-8, atol=1e-2)


def test_shape_errors_are_clear():
    x, dt, A, B, C, *_ = make_inputs()
    with pytest.raises(ValueError, match="dt must be"):
        chunk_scan(x, dt[:, :-1], A, B, C, 8)
    with pytest.raises(ValueError, match="multiple of groups"):
        chunk_scan(x, dt, A, torch.randn(2, 40, 3, 6), torch.randn(2, 40, 3, 6), 8)


def test_dispatcher_uses_torch_on_cpu_and_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(fast_path, "_reported", set())
    x, dt, A, B, C, D, _, dt_bias = make_inputs()
    with caplog.at_level(logging.INFO, logger="model.ssd"):
        y = scan(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias, dt_softplus=True, torch_chunk_size=16)
        scan(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias, dt_softplus=True, torch_chunk_size=16)
    messages = [r.getMessage() for r in caplog.records if r.name == "model.ssd"]
    assert len(messages) == 1 and "chunk_scan" in messages[0]
    torch.testing.assert_close(y, chunk_scan(x, dt, A, B, C, 16, D=D, dt_bias=dt_bias, dt_softplus=True))
    with pytest.raises(RuntimeError, match="'kernel' requested"):
        scan(x, dt, A, B, C, 256, backend="kernel")
    with pytest.raises(ValueError, match="unknown SSD backend"):
        scan(x, dt, A, B, C, 256, backend="triton")


@pytest.mark.skipif(not (torch.cuda.is_available() and ssd.kernel_available()),
                    reason="needs CUDA and mamba_ssm")
def test_mamba_ssm_kernel_matches_chunk_scan():
    x, dt, A, B, C, D, z, dt_bias = (t.cuda() for t in make_inputs(l=300, h=8, p=64, n=64))
    y_kernel = scan(x, dt, A, B, C, 256, D=D, z=z, dt_bias=dt_bias, dt_softplus=True, backend="kernel")
    y_torch = chunk_scan(x, dt, A, B, C, 64, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
    torch.testing.assert_close(y_kernel, y_torch, rtol=1e-3, atol=1e-3)
