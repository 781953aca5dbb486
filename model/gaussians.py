"""The Gaussians container: raw parameters in, activated values out, in exactly one place.

Raw parameters are what networks predict and optimizers update:
  means           [..., N, 3]     world positions
  log_scales      [..., N, 3]     log of the per-axis standard deviations
  quats           [..., N, 4]     rotation quaternion, wxyz, not necessarily normalised
  opacity_logits  [..., N]        logit of opacity
  sh              [..., N, K, 3]  spherical-harmonics coefficients, K = (degree + 1)^2, degree 0..3

Leading dims (e.g. a batch of scenes) are allowed; pruning and indexing act on one scene.

`render(cameras)` is the one way Gaussians become images, for training, refinement's evaluation and
inference alike: fp32 with autocast off (depth sorting and alpha compositing are not accurate enough
in bf16), white background, the official near/far planes, one camera at a time, optionally one
activation checkpoint per view (the rasterizer's buffers for every target at 960x544 do not fit in
memory at once; with per-view checkpointing only one view's exist and the rest are recomputed in
the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from model.cameras import Cameras
from model.render import rasterize
from model.render.sh import SH_C0

NEAR, FAR = 0.01, 1e6  # the official renderer's clipping planes



def sh_degree_for(k: int) -> int:
    degree = round(k**0.5) - 1
    if (degree + 1) ** 2 != k or not 0 <= degree <= 3:
        raise ValueError(f"SH coefficient count must be 1, 4, 9 or 16 (degree 0-3), got {k}")
    return degree


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Degree-0 coefficient whose rendered colour (SH_C0 * c + 0.5) is `rgb`."""
    return (rgb - 0.5) / SH_C0


@dataclass
class Gaussians:
    means: Tensor  # [..., N, 3]
    log_scales: Tensor  # [..., N, 3]
    quats: Tensor  # [..., N, 4] wxyz
    opacity_logits: Tensor  # [..., N]
    sh: Tensor  # [..., N, K, 3]

    def __post_init__(self) -> None:
        lead = self.means.shape[:-1]
        expected = {
            "means": (self.means, (*lead, 3)),
            "log_scales": (self.log_scales, (*lead, 3)),
            "quats": (self.quats, (*lead, 4)),
            "opacity_logits": (self.opacity_logits, tuple(lead)),
        }
        for name, (t, shape) in expected.items():
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"Gaussians.{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
        if self.sh.shape[:-2] != lead or self.sh.shape[-1] != 3:
            raise ValueError(f"Gaussians.sh must have shape {(*lead, 'K', 3)}, got {tuple(self.sh.shape)}")
        sh_degree_for(self.sh.shape[-2])

    # --- activations: the only place raw parameters become renderable values ---
    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()  # [..., N, 3]

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)  # [..., N]

    @property
    def rotations(self) -> Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)  # [..., N, 4] unit wxyz

    @property
    def sh_degree(self) -> int:
        return sh_degree_for(self.sh.shape[-2])

    @property
    def count(self) -> int:
        return self.means.shape[-2]

    @property
    def device(self) -> torch.device:
        return self.means.device

    # --- containers ---
    def _map(self, fn) -> Gaussians:
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, *args, **kwargs) -> Gaussians:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians:
        return self._map(lambda t: t.detach())

    def scene(self, b: int) -> Gaussians:
        """The b-th scene of a batch [B, N, ...]."""
        if self.means.dim() != 3:
            raise ValueError("scene() needs batched Gaussians with means [B, N, 3]")
        return self._map(lambda t: t[b])

    def index(self, idx: Tensor) -> Gaussians:
        """Select Gaussians of one scene by a boolean mask [N] or integer indices [M]."""
        if self.means.dim() != 2:
            raise ValueError("index() acts on one scene (means [N, 3]); use scene(b) first")
        return self._map(lambda t: t[idx])

    @staticmethod
    def cat(items: list[Gaussians]) -> Gaussians:
        """Concatenate along the Gaussian dimension N."""
        if not items:
            raise ValueError("cannot concatenate an empty list of Gaussians")
        return Gaussians(**{name: torch.cat([getattr(g, name) for g in items], dim) for name, dim in _N_DIM.items()})

    @staticmethod
    def stack(items: list[Gaussians]) -> Gaussians:
        """Stack scenes with equal N into a batch [B, N, ...]."""
        counts = {g.count for g in items}
        if len(counts) != 1:
            raise ValueError(f"cannot stack scenes with different Gaussian counts {sorted(counts)}; pad or prune first")
        return Gaussians(**{f.name: torch.stack([getattr(g, f.name) for g in items]) for f in fields(Gaussians)})

    # --- rendering ---
    def render(self, cameras: Cameras, near: float = NEAR, far: float = FAR, backend: str = "auto",
               checkpoint_views: bool = False) -> Tensor:
        """Images [..., T, H, W, 3] in fp32 on a white background: one scene [N] into cameras [T], or a
        batch [B, N] into cameras [B, T]. checkpoint_views: recompute each view in the backward pass
        instead of storing its rasterizer buffers."""
        lead = self.means.shape[:-2]
        if tuple(cameras.shape[:-1]) != tuple(lead):
            raise ValueError(f"cameras {tuple(cameras.shape)} must be [..., T] with the Gaussians' leading dims "
                             f"{tuple(lead)}")
        batch = self if lead else Gaussians.stack([self])  # [B, N]
        cams = cameras if lead else cameras[None]  # [B, T]
        with torch.autocast(device_type=self.device.type, enabled=False):
            args = [t.float() for t in (batch.means, batch.rotations, batch.scales, batch.opacities, batch.sh)]
            viewmats, Ks = cams.viewmats.float(), cams.Ks.float()  # [B, T, 4, 4], [B, T, 3, 3]
            rows = []
            for b in range(cams.shape[0]):
                views = []
                for t in range(cams.shape[1]):
                    one = (*(a[b] for a in args), viewmats[b, t:t + 1], Ks[b, t:t + 1], cams.width, cams.height,
                           near, far, backend)
                    if checkpoint_views and torch.is_grad_enabled():
                        views.append(checkpoint(_render_view, *one, use_reentrant=False))
                    else:
                        views.append(_render_view(*one))
                rows.append(torch.stack(views))  # [T, H, W, 3]
            images = torch.stack(rows)  # [B, T, H, W, 3]
        return images if lead else images[0]

    # --- pruning ---
    def prune(self, min_opacity: float | None = None, keep_ratio: float | None = None, random_ratio: float = 0.0,
              seed: int = 0) -> Gaussians:
        """The official keep rule, then an opacity threshold; both optional.

        keep_ratio K of all N Gaussians (the official 1 - prune_ratio, 0.4 for the release), of which a
        share random_ratio r (official 0.1) is random: the int(N (K - K r)) most opaque, by decreasing
        opacity, then int(N K r) drawn uniformly from the rest by `torch.randperm` under a CPU generator
        seeded with `seed` — the official forward's counts, order and draw (after torch.manual_seed(seed)).
        min_opacity: then drop the Gaussians at or below it. Without keep_ratio the survivors keep their
        order. Deterministic for a given seed.
        """
        keep = torch.arange(self.count, device=self.device)
        if keep_ratio is not None:
            if not 0.0 < keep_ratio <= 1.0 or not 0.0 <= random_ratio <= 1.0:
                raise ValueError(f"keep_ratio must be in (0, 1] and random_ratio in [0, 1], got {keep_ratio}, "
                                 f"{random_ratio}")
            random_share = keep_ratio * random_ratio
            n_top, n_random = int(self.count * (keep_ratio - random_share)), int(self.count * random_share)
            order = torch.argsort(self.opacity_logits.detach(), descending=True, stable=True)  # [N]
            rest = order[n_top:]
            draw = torch.randperm(rest.numel(), generator=torch.Generator().manual_seed(seed))[:n_random]
            keep = torch.cat([order[:n_top], rest[draw.to(rest.device)]])
        if min_opacity is not None:
            keep = keep[self.opacities.detach()[keep] > min_opacity]
        return self.index(keep)


# Which axis is N for each field, counted from the end so leading batch dims are free.
_N_DIM = {"means": -2, "log_scales": -2, "quats": -2, "opacity_logits": -1, "sh": -3}


def _render_view(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor, viewmat: Tensor,
                 K: Tensor, width: int, height: int, near: float, far: float, backend: str) -> Tensor:
    """One scene [N, ...] (activated values) into one camera (viewmat [1, 4, 4], K [1, 3, 3]) -> [H, W, 3]."""
    white = torch.ones(1, 3, dtype=means.dtype, device=means.device)
    colors, _, _ = rasterize(means, quats, scales, opacities, sh, viewmat, K, width, height, near_plane=near,
                             far_plane=far, sh_degree=sh_degree_for(sh.shape[-2]), backgrounds=white, backend=backend)
    return colors[0]
