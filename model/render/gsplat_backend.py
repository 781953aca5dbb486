"""The CUDA backend: gsplat's fused kernels (an optional dependency, CUDA only)."""

from __future__ import annotations

import functools


@functools.cache
def available() -> bool:
    """True when gsplat imports. Its CUDA code is only compiled on first use, on a GPU machine."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install can fail with more than ImportError
        return False
    return True


def rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs):
    """gsplat.rasterization in the unpacked layout, so meta tensors are [..., C, N, ...] like the
    other backends."""
    from gsplat import rasterization

    render_colors, render_alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, packed=False, **kwargs
    )
    if meta["means2d"].requires_grad:
        meta["means2d"].retain_grad()
    meta["backend"] = "gsplat"
    return render_colors, render_alphas, meta
