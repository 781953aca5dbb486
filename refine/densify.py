"""graphdeco adaptive density control: clone small, split large, prune, reset opacity.

Screen-space gradient convention. graphdeco accumulates the gradient of the loss with respect to the
projected means in normalised device coordinates (NDC, [-1, 1] across the image), and its threshold
2e-4 refers to that. Our renderers (like gsplat) return the gradient with respect to pixel
coordinates; since x_pix = (x_ndc + 1) * W / 2 - 0.5, dL/dx_ndc = dL/dx_pix * W / 2 (and H / 2 for y).
`ndc_grad` applies exactly that conversion (gsplat's DefaultStrategy does the same), so the graphdeco
threshold keeps its meaning at any image size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from model.rotations import quat_to_matrix

from .config import RefineConfig
from .params import GROUPS, GaussianParams
from .surgery import append, keep, overwrite


def ndc_grad(means2d_grad: Tensor, width: int, height: int) -> Tensor:
    """Pixel-space gradient [..., C, N, 2] -> graphdeco's NDC gradient.

    A loss averaged over C views scales each view's gradient by 1 / C; multiplying by C gives every
    view the weight it would have if rendered alone, as in graphdeco's one-view steps.
    """
    cams = means2d_grad.shape[-3]
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=means2d_grad.dtype, device=means2d_grad.device)
    return means2d_grad * scale * cams


def visible_radius(radii: Tensor) -> Tensor:
    """Projected radius in pixels [..., C, N] from the renderer's per-axis radii [..., C, N, 2] (0 = culled)."""
    radii = radii.float()
    return torch.where((radii > 0).all(-1), radii.amax(-1), torch.zeros_like(radii[..., 0]))


class GradStats:
    """Per-Gaussian running sums between two densification events."""

    def __init__(self, count: int, device: torch.device | str = "cpu") -> None:
        self.grad_norm = torch.zeros(count, device=device)  # [N] sum of NDC gradient norms over visible views
        self.views = torch.zeros(count, device=device)  # [N] number of views in which it was visible
        self.max_radius = torch.zeros(count, device=device)  # [N] largest projected radius seen (pixels)

    def add(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """means2d_grad [C, N, 2] in pixels, radii as the renderer returns them for the same views."""
        radius = visible_radius(radii)  # [C, N]
        visible = radius > 0
        norms = ndc_grad(means2d_grad, width, height).norm(dim=-1)  # [C, N]
        self.grad_norm += (norms * visible).sum(0)
        self.views += visible.sum(0)
        self.max_radius = torch.maximum(self.max_radius, radius.amax(0))

    def keep(self, mask: Tensor) -> None:
        """Follow a prune of the Gaussians (mask [N] bool) made between two densification events."""
        self.grad_norm, self.views, self.max_radius = self.grad_norm[mask], self.views[mask], self.max_radius[mask]

    def mean_grad(self) -> Tensor:
        return self.grad_norm / self.views.clamp_min(1)  # [N]; never-visible Gaussians get 0


def clone(params: GaussianParams, optimizer: torch.optim.Optimizer, mask: Tensor) -> None:
    """Append an exact copy of each selected Gaussian (mask [N] bool); the two then move apart by their gradients."""
    append(params, optimizer, {name: getattr(params, name).detach()[mask] for name in GROUPS})


def split(params: GaussianParams, optimizer: torch.optim.Optimizer, mask: Tensor,
          generator: torch.Generator | None = None, n: int = 2) -> None:
    """Replace each selected Gaussian by n children drawn from it, with scales divided by 0.8 n.

    Children sit at samples of N(0, diag(s^2)) in the Gaussian's own frame, rotated by R and shifted by
    its mean, so together they cover the parent's footprint with smaller blobs.
    """
    rows = {name: getattr(params, name).detach()[mask] for name in GROUPS}
    stds = rows["scaling"].exp().repeat(n, 1)  # [n M, 3]
    noise = torch.randn(stds.shape, generator=generator, device=stds.device, dtype=stds.dtype)
    rot = quat_to_matrix(rows["rotation"]).repeat(n, 1, 1)  # [n M, 3, 3]
    children = {name: t.repeat(n, *([1] * (t.dim() - 1))) for name, t in rows.items()}
    children["xyz"] = (rot @ (noise * stds)[..., None])[..., 0] + children["xyz"]
    children["scaling"] = children["scaling"] - math.log(0.8 * n)
    append(params, optimizer, children)
    parents = torch.cat([mask, torch.zeros(len(stds), dtype=torch.bool, device=mask.device)])
    keep(params, optimizer, ~parents)


def reset_opacity(params: GaussianParams, optimizer: torch.optim.Optimizer, ceiling: float = 0.01) -> None:
    """Clamp every opacity to at most `ceiling` and zero the opacity moments.

    Floaters near the cameras saturate rays early; after the reset they must earn their opacity back,
    and those that do not fall under the pruning threshold.
    """
    logit = math.log(ceiling / (1 - ceiling))  # sigmoid is monotonic, so clamping logits is exact
    overwrite(params, optimizer, "opacity", params.opacity.detach().clamp_max(logit))


def densify_and_prune(params: GaussianParams, optimizer: torch.optim.Optimizer, stats: GradStats,
                      config: RefineConfig, extent: float, step: int,
                      generator: torch.Generator | None = None) -> dict[str, int]:
    """One graphdeco densification event; returns how many Gaussians were cloned, split and pruned.

    Clones are appended first and are never split in the same event (their gradient row is zero);
    the screen- and world-size prunes start once step passes the first opacity-reset period.
    """
    grads = stats.mean_grad()  # [N]
    high = grads >= config.densify_grad_threshold
    small = params.scaling.detach().exp().amax(-1) <= config.percent_dense * extent
    n = params.count
    to_clone, to_split = high & small, high & ~small
    clone(params, optimizer, to_clone)
    n_cloned = int(to_clone.sum())
    pad = torch.zeros(n_cloned, dtype=torch.bool, device=to_split.device)
    split(params, optimizer, torch.cat([to_split, pad]), generator)
    n_split = int(to_split.sum())
    # New Gaussians have not been seen yet: radius 0, so only their opacity and world size can prune them.
    radius = torch.cat([stats.max_radius, torch.zeros(n_cloned, device=stats.max_radius.device)])
    radius = torch.cat([radius[~torch.cat([to_split, pad])], torch.zeros(2 * n_split, device=radius.device)])
    prune = torch.sigmoid(params.opacity.detach()) < config.min_opacity
    if step > config.opacity_reset_interval:
        prune |= radius > config.max_screen_size
        prune |= params.scaling.detach().exp().amax(-1) > 0.1 * extent
    keep(params, optimizer, ~prune)
    return {"cloned": n_cloned, "split": n_split, "pruned": int(prune.sum()), "before": n, "after": params.count}

