"""Bidirectional Mamba2 block, parameter-compatible with the official Long-LRM checkpoint.

One input projection produces, per token, the gate z, the scan input x, the state input/readout
B and C, and the step sizes dt. Two scans read it, one forwards and one over the reversed sequence;
each has its own short causal convolution, dt_bias, A_log, D and gated-RMSNorm weight. Their
normalised, gated outputs are summed (not averaged) and go through one shared output projection.
Sharing the projections keeps the parameter count close to a single Mamba2 while every token sees
the whole sequence.

Parameter names follow the official code (`mamba.in_proj`, `mamba.mamba_scans.{0,1}.conv1d`, ...),
so its checkpoint maps onto these modules without renaming inside a block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import native_kernels, ssd
from model.config import MambaConfig
from model.fast_path import cuda_capability, log_choice
from model.norms import pre_norm, residual_add

try:
    from causal_conv1d import causal_conv1d_fn
except Exception:  # CPU-only machines: causal-conv1d is a CUDA-only extra
    causal_conv1d_fn = None


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise causal convolution, then SiLU: out[t] = silu(bias + sum_k weight[k] * x[t - K + 1 + k]).

    x [b, l, d] (sequence-major, the layout the projections produce), weight [d, K], bias [d].
    Computed as a grouped 2-D convolution of x seen as a channels-last [b, d, 1, l] image, padded by
    K - 1 on both sides of which only the first l outputs are kept: oneDNN runs that in one pass in
    x's own layout (accumulating in float32 for bfloat16 inputs), 3x (float32) to 7x (bfloat16)
    faster on CPU than K shifted multiply-adds or a channels-first F.conv1d.
    """
    k, l = weight.shape[-1], x.shape[1]
    image = x.transpose(1, 2).unsqueeze(2)  # [b, d, 1, l], channels-last in memory
    y = F.conv2d(image, weight[:, None, None, :], bias, padding=(0, k - 1), groups=x.shape[-1])  # [b, d, 1, l + k - 1]
    return F.silu(y[..., :l].squeeze(2).transpose(1, 2))


# What causal-conv1d's CUDA kernel accepts, from its sources (causal-conv1d 1.6.2): csrc/causal_conv1d.cpp
# checks "width between 2 and 4" and float32/float16/bfloat16 inputs; setup.py compiles sm_75 to sm_120
# code and no PTX, so nothing older than Turing runs it; csrc/causal_conv1d.h declares its strides and
# offsets uint32_t.
CONV_KERNEL_WIDTHS = (2, 3, 4)
CONV_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CONV_KERNEL_MIN_CAPABILITY = (7, 5)
_KERNEL_INDEX_LIMIT = 2**32
# Taps of the native CPU conv (csrc/mamba2_conv.cpp, kMaxTaps: one register accumulation per tap count)
CPU_CONV_MAX_TAPS = 4


def conv_kernel_blocker(available: bool, device_type: str, capability: tuple[int, int] | None, width: int,
                        dtype: torch.dtype) -> str | None:
    """Why causal-conv1d's kernel cannot run a conv of `width` taps on `dtype` inputs here; None if it can.

    A plain function of the facts it needs, so the rule is checked on machines without a GPU. The
    input's size and layout are checked per call (`causal_conv1d`, `kernel_layout_blocker`).
    """
    if device_type != "cuda":
        return f"running on {device_type}"
    if not available:
        return "causal_conv1d does not import"
    if capability is not None and capability < CONV_KERNEL_MIN_CAPABILITY:
        return (f"compute capability {capability[0]}.{capability[1]}: causal-conv1d's kernels are built for "
                f"{CONV_KERNEL_MIN_CAPABILITY[0]}.{CONV_KERNEL_MIN_CAPABILITY[1]} and newer")
    if width not in CONV_KERNEL_WIDTHS:
        return f"d_conv {width}: the kernel takes 2 to 4 taps"
    if dtype not in CONV_KERNEL_DTYPES:
        return f"{str(dtype).removeprefix('torch.')} inputs: the kernel takes float32, float16 or bfloat16"
    return None


def cpu_conv_blocker(backend: str, width: int) -> str | None:
    """Why a block's conv of `width` taps does not take the native CPU kernel (csrc/mamba2_conv.cpp);
    None if it does, given CPU float32 / bfloat16 tensors without gradients (native_kernels.kernels)."""
    if backend != "auto":
        return "requested" if backend == "torch" else "causal-conv1d's CUDA kernel requested"
    if width > CPU_CONV_MAX_TAPS:
        return f"d_conv {width}: the CPU kernel takes 1 to {CPU_CONV_MAX_TAPS} taps"
    return None


def kernel_layout_blocker(x: Tensor) -> str | None:
    """Why causal_conv1d_fn would reject (or misread) x [b, d, l] as laid out; None if it takes it as is.

    csrc/causal_conv1d.cpp, forward and backward alike: x must have x.stride(2) == 1 (channels-first,
    no further rule) or x.stride(1) == 1; it is channels-last when x.stride(1) == 1 and x.stride(2) > 1,
    and then it requires dim % 8 == 0, x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0. The
    channels-last kernel also moves 16 bytes at a time from x's data pointer, so that must be 16-byte
    aligned, and every offset must fit the kernel's 32-bit index type.
    """
    span = 1 + sum((n - 1) * s for n, s in zip(x.shape, x.stride()))  # elements from the first to the last
    if span > _KERNEL_INDEX_LIMIT:
        return f"the view spans {span} elements, past the kernel's 32-bit offsets"
    if x.stride(2) == 1:
        return None
    if x.stride(1) != 1:
        return f"strides {tuple(x.stride())}: neither channels nor time is contiguous"
    odd = [f"{name} = {value}" for name, value in
           (("channels", x.shape[1]), ("x.stride(0)", x.stride(0)), ("x.stride(2)", x.stride(2))) if value % 8]
    if odd:
        return f"channels-last with {', '.join(odd)}, not a multiple of 8"
    if x.data_ptr() % 16:
        return "channels-last data not 16-byte aligned"
    return None


def kernel_input(x: Tensor) -> tuple[Tensor, str | None]:
    """x [b, l, d] -> (x as [b, d, l] in a layout causal_conv1d_fn accepts, why it had to be copied or None).

    The transposed view is used as is when the kernel takes it (the in_proj slice of the `paper`
    widths). Otherwise one copy: channels-last ([b, l, d] contiguous, as mamba_ssm's `ensure_stride`
    does) when d is a multiple of 8, which keeps the kernel's output [b, l, d]-contiguous for the
    scan; channels-first, which the kernel takes for any d, when it is not.
    """
    view = x.transpose(1, 2)  # [b, d, l]
    reason = kernel_layout_blocker(view)
    if reason is None:
        return view, None
    if x.shape[-1] % 8 == 0:
        return x.clone(memory_format=torch.contiguous_format).transpose(1, 2), reason
    return view.clone(memory_format=torch.contiguous_format), reason


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, backend: str = "auto") -> Tensor:
    """`causal_conv1d_ref` (x [b, l, d]) on causal-conv1d's CUDA kernel when it can run, otherwise in PyTorch.

    backend: "auto", "kernel" (an error if the kernel cannot run) or "torch".
    """
    blocker = "requested" if backend == "torch" else conv_kernel_blocker(
        causal_conv1d_fn is not None, x.device.type, cuda_capability(x.device), weight.shape[-1], x.dtype)
    if blocker is None and x.numel() >= _KERNEL_INDEX_LIMIT:
        blocker = f"{x.numel()} elements, past the kernel's 32-bit offsets"
    if blocker is None:
        x_t, copied = kernel_input(x)
        log_choice("model.mamba2", "causal conv1d: causal-conv1d CUDA kernel"
                   + (f" ({x.shape[-1]}-channel input copied to a layout it takes: {copied})" if copied else ""))
        return causal_conv1d_fn(x_t, weight, bias, activation="silu").transpose(1, 2)
    if backend == "kernel":
        raise RuntimeError(f"conv backend 'kernel' requested but causal-conv1d cannot run: {blocker}")
    log_choice("model.mamba2", f"causal conv1d: PyTorch depthwise convolution (oneDNN) ({blocker})")
    return causal_conv1d_ref(x, weight, bias)


class GatedRMSNorm(nn.Module):
    """rmsnorm(y * silu(z)) * weight, normalising each group of channels separately, in float32.

    Gating before the norm (the official `norm_before_gate=False`) lets the gate shape which
    channels dominate the normalisation statistics. Computed in float32 whatever y's dtype and
    returned in it; without gradients on CPU by one native pass (csrc/mamba2_gated_norm.cpp),
    otherwise by `forward_ref`.
    """

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.groups = groups
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        # y, z [..., dim]
        ops = native_kernels.kernels("gated RMSNorm", y, z.to(y.dtype), self.weight)
        if ops is None:
            return self.forward_ref(y, z)
        dim = y.shape[-1]
        out = ops.gated_rms_norm(y.reshape(-1, dim), z.to(y.dtype).reshape(-1, dim), self.weight.float().contiguous(),
                                 self.groups, self.eps)
        return out.view(y.shape)

    def forward_ref(self, y: Tensor, z: Tensor) -> Tensor:
        h = (y.float() * F.silu(z.float())).unflatten(-1, (self.groups, -1))  # [..., groups, dim/groups]
        h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)
        return (h.flatten(-2) * self.weight.float()).to(y.dtype)


class ScanDirection(nn.Module):
    """Everything one scan direction owns: conv, SSM parameters and the output norm."""

    def __init__(self, d_inner: int, nheads: int, cfg: MambaConfig):
        super().__init__()
        self.d_inner, self.nheads, self.cfg = d_inner, nheads, cfg
        conv_dim = d_inner + 2 * cfg.ngroups * cfg.d_state  # x, B and C are convolved; z and dt are not
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, cfg.d_conv, groups=conv_dim, bias=True)
        # dt_bias = softplus^-1(dt0) with dt0 log-uniform in [dt_min, dt_max]: per-head time scales
        # spread over two decades at initialisation.
        dt0 = torch.exp(torch.rand(nheads) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt0 = dt0.clamp(min=cfg.dt_init_floor)
        self.dt_bias = nn.Parameter(dt0 + torch.log(-torch.expm1(-dt0)))
        # A = -exp(A_log) < 0 keeps the recurrence stable; |A| uniform in A_init_range.
        self.A_log = nn.Parameter(torch.empty(nheads).uniform_(*cfg.A_init_range).log())
        self.D = nn.Parameter(torch.ones(nheads))  # skip connection x -> y, per head
        self.norm = GatedRMSNorm(d_inner, cfg.ngroups, cfg.norm_eps)

    def forward(self, zxbcdt: Tensor, backend: str = "auto") -> Tensor:
        # zxbcdt [b, l, 2*d_inner + 2*G*N + H] -> [b, l, d_inner]
        z, xbc, dt = self.split(zxbcdt)
        weight, bias = self.conv1d.weight[:, 0].to(xbc.dtype), self.conv1d.bias.to(xbc.dtype)
        xbc = causal_conv1d(xbc, weight, bias, backend)  # [b, l, d_inner + 2*G*N]
        x, B, C = xbc.split(self.conv_splits, dim=-1)
        return self.norm(self.scan(x, dt, B, C, backend), z)  # [b, l, d_inner]

    def forward_native(self, zxbcdt: Tensor, ops, out: Tensor | None = None) -> Tensor:
        """`forward` on the CPU kernels (no gradients), reading zxbcdt in place.

        out None: the forward direction; returns its output [b, l, d_inner]. Otherwise the backward
        direction, over the reversed sequence without reversing any copy of it: the conv writes x, B
        and C in scan order, dt alone is flipped (H values per token), and the norm adds each
        token's output to its row of out (the forward direction's), which it returns.
        """
        reverse = out is not None
        z, xbc, dt = self.split(zxbcdt)
        x, B, C = ops.causal_conv1d_silu(xbc, self.conv1d.weight[:, 0].t().float().contiguous(),
                                         self.conv1d.bias.float(), self.conv_splits, reverse)  # [b, l, *] each
        y = self.scan(x, dt.flip(1) if reverse else dt, B, C, "auto")  # [b, l, d_inner], in scan order
        if not reverse:
            return self.norm(y, z)
        ops.gated_rms_norm_add_reversed(out, y, z, self.norm.weight.float().contiguous(), self.norm.groups,
                                        self.norm.eps)
        return out

    @property
    def conv_splits(self) -> list[int]:
        gn = self.cfg.ngroups * self.cfg.d_state
        return [self.d_inner, gn, gn]  # x, B, C

    def split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # zxbcdt [b, l, 2*d_inner + 2*G*N + H] -> views z [b, l, d_inner], xbc [b, l, d_inner + 2*G*N], dt [b, l, H]
        return zxbcdt.split([self.d_inner, sum(self.conv_splits), self.nheads], dim=-1)

    def scan(self, x: Tensor, dt: Tensor, B: Tensor, C: Tensor, backend: str) -> Tensor:
        # x [b, l, d_inner], dt [b, l, H], B and C [b, l, G*N] -> y [b, l, d_inner]
        cfg = self.cfg
        return ssd.scan(
            x.unflatten(-1, (self.nheads, cfg.headdim)),  # [b, l, H, P]
            dt,  # [b, l, H]
            -torch.exp(self.A_log.float()),  # [H]
            B.unflatten(-1, (cfg.ngroups, cfg.d_state)),  # [b, l, G, N]
            C.unflatten(-1, (cfg.ngroups, cfg.d_state)),
            cfg.chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            torch_chunk_size=cfg.cpu_chunk_size,
            backend=backend,
        ).flatten(-2)


class BiMamba2(nn.Module):
    """Shared in_proj -> forward scan + flipped backward scan -> sum -> shared out_proj.

    Without gradients on CPU, native kernels read the projection in place for both directions
    (`ScanDirection.forward_native`): no flipped copies, and the sum happens in the backward
    direction's norm. Otherwise (training, CUDA) the PyTorch / CUDA-kernel code below runs.
    """

    def __init__(self, d_model: int, cfg: MambaConfig, backend: str = "auto"):
        super().__init__()
        d_inner = cfg.expand * d_model
        nheads = d_inner // cfg.headdim
        self.backend = backend
        # Output order [z, x, B, C, dt], as the official checkpoint's in_proj rows.
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * cfg.ngroups * cfg.d_state + nheads, bias=False)
        self.mamba_scans = nn.ModuleList([ScanDirection(d_inner, nheads, cfg) for _ in range(2)])
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        # u [b, l, d_model]
        zxbcdt = self.in_proj(u.to(self.in_proj.weight.dtype))  # [b, l, d_in_proj]
        ops = self.cpu_kernels(zxbcdt)
        if ops is not None:
            forward, backward = self.mamba_scans
            out = forward.forward_native(zxbcdt, ops)  # [b, l, d_inner]
            return self.out_proj(backward.forward_native(zxbcdt, ops, out=out))
        forward = self.mamba_scans[0](zxbcdt, self.backend)
        zxbcdt = zxbcdt.flip(1)  # the unflipped projection is dropped before the second scan (peak memory)
        backward = self.mamba_scans[1](zxbcdt, self.backend).flip(1)
        return self.out_proj(forward + backward)

    def cpu_kernels(self, zxbcdt: Tensor):
        """torch.ops.network_cpu if its conv and norm kernels can run this block on zxbcdt, else None
        (logged as the conv's choice: `causal_conv1d` then logs the path it takes)."""
        blocker = cpu_conv_blocker(self.backend, self.mamba_scans[0].conv1d.kernel_size[0])
        if blocker is None:
            return native_kernels.kernels("causal conv1d", zxbcdt, *self.mamba_scans.parameters())
        if self.backend == "auto":  # (a backend requested is logged as such by causal_conv1d)
            log_choice("model.mamba2", f"causal conv1d: native CPU kernel not used ({blocker})")
        return None


class Mamba2Block(nn.Module):
    """Pre-norm residual block x + BiMamba2(RMSNorm(x)); no MLP, as in the official model."""

    def __init__(self, d_model: int, cfg: MambaConfig, backend: str = "auto"):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=cfg.norm_eps)
        self.mamba = BiMamba2(d_model, cfg, backend)

    def forward(self, x: Tensor) -> Tensor:
        # x [b, l, d_model] is the float32 residual stream; the branch computes in its weights' dtype
        return residual_add(x, self.mamba(pre_norm(self.norm, x, self.mamba.in_proj.weight.dtype)))
