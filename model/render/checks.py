"""Argument checking for `rasterize`: one clear sentence per mistake, naming the argument, the
expected layout and the shape actually given."""

from __future__ import annotations

from torch import Tensor

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_inputs(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode
) -> tuple[tuple[int, ...], int, int, int, bool]:
    """Validates shapes and options; returns (batch_dims, N, C, D, per_camera) with D the colour
    channels and per_camera True when colours are given per camera ([..., C, N, ...], told apart
    from per-Gaussian colours by their number of dimensions, as in gsplat)."""
    tensors = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
               "viewmats": viewmats, "Ks": Ks, "backgrounds": backgrounds}  # fmt: skip
    for name, t in tensors.items():
        if t is None and name == "backgrounds":
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != means.device:
            raise ValueError(f"all inputs must be on one device: means is on {means.device}, {name} on {t.device}")
    if means.dim() < 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [..., N, 3], got {_fmt(means.shape)}")
    batch, N = tuple(means.shape[:-2]), means.shape[-2]

    def fail(name: str, layout: str, expected: tuple, got: Tensor, note: str = "") -> None:
        raise ValueError(
            f"{name} must be {layout} = {_fmt(expected)}{note} (means is {_fmt(means.shape)}), got {_fmt(got.shape)}"
        )

    for name, t, layout, tail in (("quats", quats, "[..., N, 4]", (4,)), ("scales", scales, "[..., N, 3]", (3,)),
                                  ("opacities", opacities, "[..., N]", ())):  # fmt: skip
        if tuple(t.shape) != (*batch, N, *tail):
            fail(name, layout, (*batch, N, *tail), t)
    if viewmats.dim() != len(batch) + 3 or tuple(viewmats.shape[:-3]) != batch or viewmats.shape[-2:] != (4, 4):
        fail("viewmats", "[..., C, 4, 4]", (*batch, "C", 4, 4), viewmats)
    C = viewmats.shape[-3]
    if tuple(Ks.shape) != (*batch, C, 3, 3):
        fail("Ks", "[..., C, 3, 3]", (*batch, C, 3, 3), Ks)
    if sh_degree is None:
        per_camera = colors.dim() == len(batch) + 3
        lead = (*batch, C, N) if per_camera else (*batch, N)
        if colors.dim() not in (len(batch) + 2, len(batch) + 3) or tuple(colors.shape[:-1]) != lead:
            fail("colors", "[..., N, D] or per camera [..., C, N, D]", (*lead, "D"), colors, " when sh_degree is None")
        D = colors.shape[-1]
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be None or 0..3, got {sh_degree!r}")
        per_camera = colors.dim() == len(batch) + 4
        lead = (*batch, C, N) if per_camera else (*batch, N)
        if colors.dim() not in (len(batch) + 3, len(batch) + 4) or tuple(colors.shape[:-2]) != lead \
                or colors.shape[-1] != 3:
            fail("colors", "[..., N, K, 3] or per camera [..., C, N, K, 3]", (*lead, "K", 3), colors,
                 " (SH coefficients) when sh_degree is set")
        need = (sh_degree + 1) ** 2
        if colors.shape[-2] < need:
            raise ValueError(f"sh_degree={sh_degree} needs K >= {need} SH coefficients, got {_fmt(colors.shape)}")
        D = 3
    if backgrounds is not None and tuple(backgrounds.shape) != (*batch, C, D):
        fail("backgrounds", "[..., C, D]", (*batch, C, D), backgrounds)
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {', '.join(RENDER_MODES)}, got {render_mode!r}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive ints, got {width!r} x {height!r}")
    return batch, N, C, D, per_camera
