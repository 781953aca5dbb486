"""Training-time pruning (stage 3): render only the most opaque Gaussians plus a random few.

Long-LRM trains its highest resolution with most Gaussians removed before rendering, which bounds
rendering memory and teaches the network to concentrate opacity. Of N Gaussians per scene it keeps
K = (1 - prune_ratio) N: the top (1 - random_ratio) K by opacity, and random_ratio K drawn uniformly
from the rest so low-opacity Gaussians still receive gradient and can grow back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.gaussians import Gaussians


def prune_counts(n: int, prune_ratio: float, random_ratio: float) -> tuple[int, int]:
    """(kept by opacity, kept at random) out of n."""
    keep = max(1, round(n * (1.0 - prune_ratio)))
    random_keep = round(keep * random_ratio)
    return keep - random_keep, random_keep


def prune_indices(opacities: Tensor, prune_ratio: float, random_ratio: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """Indices [B, K] of the Gaussians to keep, from activated opacities [B, N]."""
    b, n = opacities.shape
    n_top, n_random = prune_counts(n, prune_ratio, random_ratio)
    order = opacities.detach().argsort(dim=-1, descending=True)  # [B, N]
    top, rest = order[:, :n_top], order[:, n_top:]
    # A uniformly random subset of the rest: the top n_random of i.i.d. uniform scores.
    scores = torch.rand(rest.shape, generator=generator, device=rest.device)  # [B, N - n_top]
    picked = rest.gather(1, scores.topk(n_random, dim=-1).indices)  # [B, n_random]
    return torch.cat([top, picked], dim=1)


def gather_gaussians(gaussians: Gaussians, indices: Tensor) -> Gaussians:
    """Batched selection: Gaussians [B, N] and indices [B, K] -> Gaussians [B, K] (differentiable)."""

    def take(t: Tensor) -> Tensor:
        idx = indices.reshape(*indices.shape, *([1] * (t.dim() - 2))).expand(*indices.shape, *t.shape[2:])
        return t.gather(1, idx)

    return Gaussians(means=take(gaussians.means), log_scales=take(gaussians.log_scales), quats=take(gaussians.quats),
                     opacity_logits=take(gaussians.opacity_logits), sh=take(gaussians.sh))


def prune_for_training(gaussians: Gaussians, prune_ratio: float, random_ratio: float,
                       generator: torch.Generator | None = None) -> Gaussians:
    """Gaussians [B, N] -> Gaussians [B, K], K = (1 - prune_ratio) N."""
    return gather_gaussians(gaussians, prune_indices(gaussians.opacities, prune_ratio, random_ratio, generator))
