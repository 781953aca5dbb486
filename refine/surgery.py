"""Grow, shrink or overwrite the Gaussians while keeping Adam's state aligned with them.

Adam keeps per-element moments (exp_avg, exp_avg_sq) keyed by the parameter object. Changing the
number of Gaussians means new parameter objects, so every operation here builds the new parameter,
carries the moments over row by row (survivors keep theirs exactly, new rows start at zero), moves
the state to the new key and points both the param group and the module attribute at the new object.
Resetting survivors' moments would throw away their curvature estimate and make them jump.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .params import GROUPS, GaussianParams, group


def append(params: GaussianParams, optimizer: torch.optim.Optimizer, new: dict[str, Tensor]) -> None:
    """Add Gaussians at the end: new[name] has the group's shape with M rows; moments start at zero."""
    if set(new) != set(GROUPS):
        raise ValueError(f"append needs tensors for exactly the groups {list(GROUPS)}, got {sorted(new)}")
    for name in GROUPS:
        rows = new[name].detach().to(getattr(params, name))

        def grow(t: Tensor, rows: Tensor = rows) -> Tensor:
            return torch.cat([t, torch.zeros_like(rows)]) if _per_row(t, rows.shape[1:]) else t

        _swap(params, optimizer, name, torch.cat([getattr(params, name).detach(), rows]), grow)


def keep(params: GaussianParams, optimizer: torch.optim.Optimizer, mask: Tensor) -> None:
    """Keep only the Gaussians where mask [N] (bool) is True, with their moments; order is preserved."""
    if mask.dtype != torch.bool or mask.shape != (params.count,):
        raise ValueError(f"keep needs a bool mask of shape ({params.count},), got {mask.dtype} {tuple(mask.shape)}")
    for name in GROUPS:
        shape = getattr(params, name).shape[1:]
        _swap(params, optimizer, name, getattr(params, name).detach()[mask],
              lambda t, shape=shape: t[mask] if _per_row(t, shape) else t)


def overwrite(params: GaussianParams, optimizer: torch.optim.Optimizer, name: str, value: Tensor) -> None:
    """Replace one group's values (same shape) and zero that group's moments (graphdeco's opacity reset)."""
    old = getattr(params, name)
    if value.shape != old.shape:
        raise ValueError(f"overwrite {name}: shape {tuple(value.shape)} differs from {tuple(old.shape)}")
    _swap(params, optimizer, name, value.detach().to(old).clone(),
          lambda t: torch.zeros_like(t) if _per_row(t, old.shape[1:]) else t)


def _per_row(t: Tensor, row_shape: torch.Size) -> bool:
    """Whether a state entry is per element (moments) rather than a scalar such as Adam's step count."""
    return t.dim() == len(row_shape) + 1 and t.shape[1:] == row_shape


def _swap(params: GaussianParams, optimizer: torch.optim.Optimizer, name: str, value: Tensor,
          remap: Callable[[Tensor], Tensor]) -> None:
    old = getattr(params, name)
    param = nn.Parameter(value.contiguous())
    g = group(optimizer, name)
    if len(g["params"]) != 1 or g["params"][0] is not old:
        raise RuntimeError(f"optimizer group {name!r} is not aligned with the module's parameter")
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[param] = {k: remap(v) if torch.is_tensor(v) else v for k, v in state.items()}
    g["params"][0] = param
    setattr(params, name, param)
