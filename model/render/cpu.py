"""The native CPU backend: the C++ stages of csrc/ wrapped as autograd Functions.

Each stage (projection, SH colour, compositing) is its own Function with a hand-written backward,
so the 2D means are an ordinary tensor between two Functions and receive their own gradient (what
3DGS densification reads). Inputs must be float32 CPU tensors; the C++ code needs them contiguous.
Cameras are differentiated too: projection gives viewmats and Ks their gradients, SH colouring the
camera centres theirs (which reach viewmats through rasterize's camera_centres). The kernels only
compute them when a camera input requires a gradient, so fixed cameras cost nothing extra.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .native import load_ops


class _Project(Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
        radii, means2d, depths, conics = load_ops().project_forward(
            means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane
        )
        ctx.save_for_backward(means, quats, scales, viewmats, Ks, radii, conics)
        ctx.size = (width, height)
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics

    @staticmethod
    @once_differentiable
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics):
        means, quats, scales, viewmats, Ks, radii, conics = ctx.saved_tensors
        camera_grads = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        v_means, v_quats, v_scales, v_viewmats, v_Ks = load_ops().project_backward(
            means, quats, scales, viewmats, Ks, radii, conics,
            v_means2d.contiguous(), v_depths.contiguous(), v_conics.contiguous(), *ctx.size, camera_grads,
        )  # fmt: skip
        return v_means, v_quats, v_scales, None, v_viewmats, v_Ks, None, None, None, None, None


class _ShColors(Function):
    @staticmethod
    def forward(ctx, degree, means, campos, coeffs):
        ctx.degree = degree
        ctx.save_for_backward(means, campos, coeffs)
        return load_ops().sh_forward(degree, means, campos, coeffs)

    @staticmethod
    @once_differentiable
    def backward(ctx, v_colors):
        means, campos, coeffs = ctx.saved_tensors
        v_means, v_coeffs, v_campos = load_ops().sh_backward(
            ctx.degree, means, campos, coeffs, v_colors.contiguous(), ctx.needs_input_grad[2]
        )
        return None, v_means, v_campos, v_coeffs


class _Composite(Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, radii, depths, width, height):
        colors_out, alphas, offsets, ids, final_T, n_contrib, stats = load_ops().composite_forward(
            means2d, conics, colors, opacities, backgrounds, radii, depths, width, height
        )
        ctx.save_for_backward(means2d, conics, colors, opacities, backgrounds, offsets, ids, final_T, n_contrib)
        ctx.size = (width, height)
        ctx.mark_non_differentiable(stats)
        return colors_out, alphas, stats

    @staticmethod
    @once_differentiable
    def backward(ctx, v_colors, v_alphas, _v_stats):
        means2d, conics, colors, opacities, backgrounds, offsets, ids, final_T, n_contrib = ctx.saved_tensors
        v_means2d, v_conics, v_feats, v_opac, v_bg = load_ops().composite_backward(
            means2d, conics, colors, opacities, backgrounds, offsets, ids, final_T, n_contrib,
            v_colors.contiguous(), v_alphas.contiguous(), *ctx.size,
        )  # fmt: skip
        return v_means2d, v_conics, v_feats, v_opac, v_bg, None, None, None, None


def project(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
    """Same contract as reference.project: [B, N, ...] Gaussians, [B, C, ...] cameras -> radii,
    means2d, depths, conics, each [B, C, N, ...]."""
    return _Project.apply(
        means.contiguous(), quats.contiguous(), scales.contiguous(), opacities.contiguous(),
        viewmats.contiguous(), Ks.contiguous(), width, height, float(eps2d), float(near_plane), float(far_plane),
    )  # fmt: skip


def sh_colors(degree: int, means: Tensor, campos: Tensor, coeffs: Tensor) -> Tensor:
    """means [B, N, 3], campos [B, C, 3], coeffs [B, N, K, 3] -> colours [B, C, N, 3]."""
    return _ShColors.apply(degree, means.contiguous(), campos.contiguous(), coeffs.contiguous())


def composite(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    colors: Tensor,  # [I, N, D]
    opacities: Tensor,  # [I, N]
    backgrounds: Tensor | None,  # [I, D]
    radii: Tensor,  # [I, N, 2]
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, dict]:
    """Front-to-back compositing -> colours [I, H, W, D], alphas [I, H, W, 1], stats."""
    if backgrounds is not None:
        backgrounds = backgrounds.contiguous()
    colors_out, alphas, stats = _Composite.apply(
        means2d.contiguous(), conics.contiguous(), colors.contiguous(), opacities.contiguous(),
        backgrounds, radii.contiguous(), depths.contiguous(), width, height,
    )  # fmt: skip
    n_blends, n_isects = stats.tolist()
    return colors_out, alphas, {"n_isects": n_isects, "n_blends": n_blends}


def check_supported(tensor: Tensor) -> None:
    """Raises when the native kernels cannot take these inputs."""
    if tensor.device.type != "cpu":
        raise ValueError(
            f"backend='cpu' needs CPU tensors, got {tensor.device}; move the inputs with .cpu() "
            "or use backend='gsplat' / 'auto' for CUDA tensors"
        )
    if tensor.dtype != torch.float32:
        raise ValueError(
            f"backend='cpu' computes in float32, got {tensor.dtype}; cast the inputs with .float() "
            "or use backend='torch' (the reference renderer works in any float dtype)"
        )
