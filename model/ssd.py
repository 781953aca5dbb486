"""The Mamba2 selective-state-space scan (SSD), in pure PyTorch, plus a dispatcher to the CUDA kernel.

The scan, per head h (P channels) with a shared-per-group state input B_t and readout C_t (N each):

    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t B_t^T        # [P, N]
    y_t     = state_t C_t + D_h * x_t                                   # [P]
    y_t     = y_t * silu(z_t)                                           # only if z is given

`chunk_scan_ref` runs this literally, one time step at a time: slow, obviously right, the test oracle.
`chunk_scan` computes the same thing in chunks of Q steps (Mamba2's "state space duality"):
inside a chunk the map x -> y is a masked Q x Q matrix (a small attention), and only one state per
chunk is carried across chunk boundaries. Almost all the work becomes batched matrix products,
which is what a CPU does fast (in bfloat16 for bfloat16 inputs). Results do not depend on Q beyond
float rounding. Without gradients on CPU, one native kernel runs the same chunked algebra head by
head with each state kept in cache (csrc/mamba2_scan.cpp, `_native_scan`); the PyTorch code is its
oracle and the path for training.

`scan` chooses between mamba_ssm's fused kernel (CUDA tensors, when mamba_ssm imports) and
`chunk_scan`, and logs the decision once.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from model import native_kernels
from model.fast_path import log_choice

try:
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except Exception:  # CPU-only machines: mamba_ssm is a CUDA-only extra
    mamba_chunk_scan_combined = None


_NO_LIMIT = (0.0, math.inf)


def _prepare_dt(dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool, dt_limit: tuple[float, float]) -> Tensor:
    """Step sizes as the kernel sees them: optional bias, softplus, then clamp."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != _NO_LIMIT:
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _skip_and_gate(y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D x, then y * silu(z): the two extras mamba_chunk_scan_combined applies after the scan."""
    if D is not None:
        y = torch.addcmul(y, x, D[:, None] if D.dim() == 1 else D)  # D [H] or [H, P]
    if z is not None:
        y = y * F.silu(z)
    return y


def _check_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [batch, length, heads, headdim], got {tuple(x.shape)}")
    b, l, h, p = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"dt must be {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"A must be ({h},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, l) or B.shape != C.shape:
        raise ValueError(f"B and C must both be [{b}, {l}, groups, d_state], got {tuple(B.shape)} and {tuple(C.shape)}")
    if h % B.shape[2] != 0:
        raise ValueError(f"heads ({h}) must be a multiple of groups ({B.shape[2]})")
    if D is not None and D.shape not in ((h,), (h, p)):
        raise ValueError(f"D must be ({h},) or ({h}, {p}), got {tuple(D.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must have the shape of x {tuple(x.shape)}, got {tuple(z.shape)}")


def chunk_scan_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False,
                   dt_limit: tuple[float, float] = _NO_LIMIT) -> Tensor:
    """The recurrence, one time step at a time, in the dtype of the inputs (use float64 as an oracle).

    Same arguments and result as `chunk_scan`, without the chunk size.
    """
    _check_shapes(x, dt, A, B, C, D, z)
    b, l, h, p = x.shape
    g = B.shape[2]
    dt = _prepare_dt(dt, dt_bias, dt_softplus, dt_limit)  # [b, l, h]
    B = B.repeat_interleave(h // g, dim=2)  # [b, l, h, n]: head h reads group h // (h/g)
    C = C.repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, p, B.shape[-1])  # [b, h, p, n]
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # [b, h]
        inject = (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]  # [b, h, p, n]
        state = decay[..., None, None] * state + inject
        ys.append((state * C[:, t, :, None, :]).sum(-1))  # [b, h, p]
    y = torch.stack(ys, dim=1)  # [b, l, h, p]
    return _skip_and_gate(y, x, D, z)


class _StatePassing(torch.autograd.Function):
    """`state_passing` in PyTorch, one chunk at a time; the test oracle of the native kernel and the
    path whenever gradients are needed. A hand-written backward (the same recurrence run in reverse,
    in float32) keeps this one autograd node instead of c tiny ones, and saves only its own output.
    """

    @staticmethod
    def forward(ctx, u: Tensor, a: Tensor, s_in: Tensor) -> tuple[Tensor, Tensor]:
        # u [b, c, *S] state each chunk produces; a [b, c, *] decay across each chunk, broadcastable to u
        states = torch.empty_like(u)
        s = s_in
        for k in range(u.shape[1]):
            states[:, k] = s
            s = torch.addcmul(u[:, k].float(), s, a[:, k])
        ctx.save_for_backward(states, a)
        return states, s

    @staticmethod
    def backward(ctx, grad_states: Tensor, grad_s_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        states, a = ctx.saved_tensors
        # grad_u[k] is the total gradient reaching s_{k+1}: from s_out for the last chunk, and
        # grad_states[k+1] plus what flows back through the decay a[k+1] for the others.
        grad_states = grad_states.float()
        grad_u = torch.empty_like(grad_states)
        grad_u[:, -1] = grad_s_out
        for k in range(states.shape[1] - 1, 0, -1):
            torch.addcmul(grad_states[:, k], grad_u[:, k], a[:, k], out=grad_u[:, k - 1])
        grad_a = (grad_u * states.float()).sum_to_size(a.shape)
        grad_s_in = torch.addcmul(grad_states[:, 0], grad_u[:, 0], a[:, 0])
        return grad_u, grad_a, grad_s_in


def state_passing(u: Tensor, decay: Tensor, s_in: Tensor) -> tuple[Tensor, Tensor]:
    """Carry the state across the c chunks of a slab: s_0 = s_in, s_{k+1} = decay_k * s_k + u_k.

    u [b, c, g, hg, p, n] (float32 or bfloat16) the state each chunk produces, decay [b, c, g, hg]
    float32 the decay across each chunk (per head), s_in [b, g, hg, p, n] float32. Returns
    (s_0 .. s_{c-1} stacked like u, in u's dtype; s_c in float32). The running state is float32
    whatever u's dtype (in bfloat16 its rounding would compound from chunk to chunk); only the stacked
    copies the readout multiplies with are rounded.
    """
    return _StatePassing.apply(u, decay[..., None, None], s_in)


def chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None = None,
               z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False,
               dt_limit: tuple[float, float] = _NO_LIMIT) -> Tensor:
    """Chunked SSD scan with the semantics of mamba_ssm's `mamba_chunk_scan_combined`.

    x [b, l, h, p], dt [b, l, h], A [h], B and C [b, l, g, n], D [h] or [h, p], z [b, l, h, p],
    dt_bias [h]. Returns y [b, l, h, p] in the dtype of x. Any length: a final partial chunk is scanned
    as a shorter chunk (equivalent to padding it with dt = 0, without the copies).
    Precision follows mamba_ssm's kernels, whatever the autocast state: step sizes, cumulative sums of
    dt * A, their exponentials and the state carried across chunks are float32 (exp of cumulative
    sums loses everything in bfloat16); the chunk matmuls take bfloat16 operands when x is bfloat16
    (products accumulate in float32) and float32 ones otherwise, and the values between them (scaled
    inputs, scores, skip, gate) are rounded to that dtype.
    """
    _check_shapes(x, dt, A, B, C, D, z)
    out_dtype = x.dtype
    mm_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        dt = _prepare_dt(dt.float(), dt_bias.float() if dt_bias is not None else None, dt_softplus, dt_limit)
        x = x.to(mm_dtype)
        # B and C arrive as slices of a wider projection; contiguous copies (small: 2 * n values per token)
        # make the three matmuls that read them several times faster
        B, C = B.to(mm_dtype).contiguous(), C.to(mm_dtype).contiguous()
        y = _native_scan(x, dt, A.float(), B, C, D, chunk_size)
        if y is None:
            y = _chunk_scan(x, dt, A.float(), B, C, D, chunk_size)
        return _skip_and_gate(y, x, None, z.to(mm_dtype) if z is not None else None).to(out_dtype)


def _native_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                 chunk_size: int) -> Tensor | None:
    """`_chunk_scan` by the native kernel (csrc/mamba2_scan.cpp), or None where it cannot run: gradients
    needed, not CPU float32 / bfloat16 tensors, or `native_scan_blocker`. Same arguments and result."""
    b, l, h, p = x.shape
    blocker = native_scan_blocker(x.dtype, B.shape[-1], chunk_size) if x.device.type == "cpu" else None
    if blocker is not None:
        log_choice("model.ssd", f"SSD chunk_scan: PyTorch ({blocker})")
        return None
    ops = native_kernels.kernels("SSD chunk_scan", x, dt, B, C, A, *([D] if D is not None else []))
    if ops is None:
        return None
    D = (D.float()[:, None] if D.dim() == 1 else D.float()).expand(h, p).contiguous() if D is not None \
        else x.new_zeros(h, p, dtype=torch.float32)
    y = x.new_empty(b, l, h * p)
    ops.ssd_scan(x.flatten(2).contiguous(), dt.contiguous(), A.contiguous(), B.flatten(2), C.flatten(2), D,
                 B.shape[2], chunk_size, y)
    return y.unflatten(-1, (h, p))


def native_scan_blocker(dtype: torch.dtype, d_state: int, chunk_size: int) -> str | None:
    """Why the native CPU scan cannot take a scan of this dtype, state size and chunk, or None
    (tensors off the CPU, gradients, or no native kernels at all: see native_kernels.kernels)."""
    if dtype == torch.bfloat16 and (d_state % 2 or chunk_size % 2):
        return f"d_state {d_state} and chunk {chunk_size} must be even for bfloat16 products"
    return _micro_kernel_blocker(dtype)


@functools.cache
def _micro_kernel_blocker(dtype: torch.dtype) -> str | None:
    """Why the native scan cannot run in `dtype` on this CPU (PyTorch's brgemm micro-kernels raise:
    float32 needs AVX2, bfloat16 AVX-512), or None: found by running it once on a few values."""
    ops = native_kernels._library()
    if ops is None or dtype not in (torch.float32, torch.bfloat16):
        return None  # (`kernels` gives the reason)
    x = torch.ones(1, 4, 2, dtype=dtype)
    try:
        ops.ssd_scan(x, torch.ones(1, 4, 1), -torch.ones(1), x, x, torch.ones(1, 2), 1, 2, torch.empty_like(x))
    except RuntimeError as err:
        return f"this CPU's matrix micro-kernels do not take {str(dtype).removeprefix('torch.')}: {err}"
    return None


# Elements per slab. The sequence is processed a slab at a time so every intermediate stays a few MB:
# small blocks are reused by the allocator and stay in cache, while fresh multi-hundred-MB buffers
# cost more in page faults than the arithmetic done in them.
_SLAB_ELEMENTS = 1 << 22


# Log-decays are clamped here before exp. exp(-80) ~ 2e-35 is nothing next to any decay that
# matters, while below -87.3 (where exp leaves float32's normal range) CPU exp takes a path ~70x slower.
_LOG_TINY = -80.0


def _decay(log_decay: Tensor) -> Tensor:
    """exp of a log-decay (<= 0), with arguments below _LOG_TINY raised to it."""
    return log_decay.clamp(min=_LOG_TINY).exp()


def _chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, chunk_size: int) -> Tensor:
    """The scan with the skip, without the gate: x, B, C in the matmul dtype; dt [b, l, h], A and D float32."""
    b, l, h, p = x.shape
    g, n = B.shape[2:]
    q = min(chunk_size, l)
    whole = l - l % q
    slab = max(1, _SLAB_ELEMENTS // (b * h * p * max(n, q))) * q  # tokens per slab
    # Whole chunks a slab at a time, then any remainder as one shorter chunk (no padding copies).
    spans = [(min(slab, whole - t0), q) for t0 in range(0, whole, slab)]  # (tokens, chunk size)
    if whole < l:
        spans.append((l - whole, l - whole))
    state = dt.new_zeros(b, g, h // g, p, n)  # float32 state entering the next span, [heads, p, n] per group
    D = (D.float()[:, None] if D.dim() == 1 else D.float()).expand(h, p) if D is not None else None  # [h, p]
    # split (not slicing) so autograd assembles the inputs' gradients with one concatenation
    lengths = [length for length, _ in spans]
    y = x.new_empty(b, l, h, p)  # each slab writes its part
    start = 0
    for (length, chunk), x_s, dt_s, B_s, C_s in zip(spans, *(t.split(lengths, dim=1) for t in (x, dt, B, C))):
        split = (length // chunk, chunk)
        dt_s = dt_s.unflatten(1, split)  # [b, c, q, h]
        a_cum = torch.cumsum(dt_s * A, dim=2)  # [b, c, q, h] log-decay since the chunk start, inclusive
        state = _slab_scan(x_s.unflatten(1, split), dt_s, a_cum, B_s.unflatten(1, split), C_s.unflatten(1, split),
                           D, state, y[:, start:start + length].unflatten(1, split))
        start += length
    return y


def _slab_scan(x: Tensor, dt: Tensor, a_cum: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
               state: Tensor, y: Tensor) -> Tensor:
    """Scan c consecutive chunks given the state entering the first, writing their outputs into y
    [b, c, q, h, p] (a view of the scan's output); returns the state leaving the last.

    x, B, C in the matmul dtype, dt, a_cum, D [h, p] and state float32. States are kept as [p, n]
    per head, a group's heads stacked ([heads * p, n] per group), so that both big matmuls below
    take their operands and write their results in the layouts the CPU's matmul runs fastest (1.6
    to 2 times the speed of the [n, heads * p] layout in bf16 on AMX); the readout comes out
    channel-major per head, which `_chunk_outputs` turns back into the output layout. The
    elementwise stages between the matmuls are `_chunk_inputs`, `_chunk_scores` and `_chunk_outputs`.
    """
    b, c, q, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g  # heads per group
    x_dt, x_end = _chunk_inputs(x, dt, a_cum)  # [b, c, h, q, p], [b, c, h, p, q]
    B_g, C_g = B.transpose(2, 3), C.transpose(2, 3)  # [b, c, g, q, n]

    # 1. Within a chunk: y_l = sum_{s<=l} exp(a_l - a_s) (C_l . B_s) x_dt_s, a masked q x q matrix per head.
    scores = _chunk_scores(a_cum, C_g @ B_g.transpose(-1, -2))  # [b, c, h, q, q]
    y_diag = scores @ x_dt  # [b, c, h, q, p]

    # 2. The state each chunk leaves behind: sum_s exp(a_last - a_s) x_dt_s B_s^T, one matmul per
    #    (chunk, group) with all the group's heads stacked.
    produced = x_end.view(b, c, g, hg * p, q) @ B_g  # [b, c, g, hg*p, n]

    # 3. Carry states across chunk boundaries (sequential over chunks only).
    decay = _decay(a_cum[:, :, -1]).view(b, c, g, hg)  # [b, c, g, hg] per head across each chunk
    entering, state = state_passing(produced.view(b, c, g, hg, p, n), decay, state)

    # 4. What the entering state contributes: exp(a_l) s C_l, one matmul per (chunk, group); then
    #    the intra-chunk part and the skip D x are added.
    y_off = entering.view(b, c, g, hg * p, n) @ C_g.transpose(-1, -2)  # [b, c, g, hg*p, q]
    _chunk_outputs(y_diag, y_off.view(b, c, h, p, q), a_cum, x, D, y)
    return state


# The elementwise stages of a slab (bfloat16 products rounded one by one). Products are taken
# between tensors of one dtype: mixed-dtype elementwise ops run unvectorised.

def _chunk_inputs(x: Tensor, dt: Tensor, a_cum: Tensor) -> tuple[Tensor, Tensor]:
    """x [b, c, q, h, p], dt and a_cum [b, c, q, h] -> (x * dt as [b, c, h, q, p], what each step
    injects; x * dt * exp(a_last - a) as [b, c, h, p, q], what it leaves in the chunk's final state)."""
    x_dt = x * dt[..., None].to(x.dtype)
    x_end = x_dt * _decay(a_cum[:, :, -1:] - a_cum)[..., None].to(x.dtype)
    return x_dt.transpose(2, 3), x_end.permute(0, 1, 3, 4, 2).contiguous()


def _chunk_scores(a_cum: Tensor, cb: Tensor) -> Tensor:
    """a_cum [b, c, q, h], cb = C . B [b, c, g, q, q] -> scores [b, c, h, q, q] in cb's dtype:
    exp(a_l - a_s) (C_l . B_s) for s <= l, 0 above the diagonal."""
    b, c, q, h = a_cum.shape
    g = cb.shape[2]
    # The mask zeroes cb above the diagonal, where a_l - a_s >= 0 is clamped to 0 so exp stays
    # finite (masked entries are exactly 0, with finite gradients).
    a_hq = a_cum.transpose(2, 3).contiguous()  # [b, c, h, q]; contiguous so seg and scores are too
    seg = (a_hq[..., :, None] - a_hq[..., None, :]).clamp_(_LOG_TINY, 0.0)  # [b, c, h, q, q]
    scores = seg.exp_().view(b, c, g, h // g, q, q) * cb.float().tril_()[:, :, :, None]
    return scores.view(b, c, h, q, q).to(cb.dtype)


def _chunk_outputs(y_diag: Tensor, y_off: Tensor, a_cum: Tensor, x: Tensor, D: Tensor | None, y: Tensor) -> None:
    """y [b, c, q, h, p] = y_diag [b, c, h, q, p] + exp(a_cum) y_off [b, c, h, p, q] + D [h, p] x [b, c, q, h, p]."""
    # (operands made contiguous first: a transposed operand sends addcmul down a slow strided path)
    y_sum = torch.addcmul(y_diag.transpose(2, 3).contiguous(), y_off.permute(0, 1, 4, 2, 3).contiguous(),
                          _decay(a_cum)[..., None].to(x.dtype))
    y.copy_(torch.addcmul(y_sum, x, D.to(x.dtype)) if D is not None else y_sum)


def kernel_available() -> bool:
    """True when mamba_ssm's Triton SSD kernel imported (it still needs CUDA tensors)."""
    return mamba_chunk_scan_combined is not None


def scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None = None,
         z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False,
         torch_chunk_size: int | None = None, backend: str = "auto") -> Tensor:
    """SSD scan on the best available backend.

    backend: "auto" (mamba_ssm kernel for CUDA tensors when importable, else `chunk_scan`),
    "kernel" (error if impossible) or "torch". `chunk_size` is the kernel's chunk; the PyTorch scan
    uses `torch_chunk_size` (default: the same), since the best chunk differs between devices.
    """
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f"unknown SSD backend {backend!r}; valid: 'auto', 'kernel', 'torch'")
    use_kernel = backend != "torch" and kernel_available() and x.is_cuda
    if backend == "kernel" and not use_kernel:
        reason = "mamba_ssm is not importable" if not kernel_available() else f"tensors are on {x.device}"
        raise RuntimeError(f"SSD backend 'kernel' requested but unavailable: {reason}")
    if use_kernel:
        log_choice("model.ssd", "SSD scan: mamba_ssm mamba_chunk_scan_combined (CUDA kernel)")
        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                                         dt_softplus=dt_softplus)
    reason = "requested" if backend == "torch" else (
        "mamba_ssm not importable" if not kernel_available() else f"tensors on {x.device}")
    log_choice("model.ssd", f"SSD scan: pure-PyTorch chunk_scan ({reason})")
    return chunk_scan(x, dt, A, B, C, torch_chunk_size or chunk_size, D=D, z=z, dt_bias=dt_bias,
                      dt_softplus=dt_softplus)
