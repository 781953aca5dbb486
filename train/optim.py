"""AdamW with decoupled weight decay on matrices only, and a cosine learning rate with linear warmup.

Weight decay pulls parameters towards zero. That is a sensible prior for weight matrices and
convolution kernels, but not for parameters with a meaningful non-zero scale or offset: biases,
normalisation gains, and the Mamba2 state-space parameters `A_log` (decay rates), `D` (skip gain)
and `dt_bias` (time-step offset). Those go to a group without decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameter names (last component) that never get weight decay whatever their shape.
NO_DECAY_NAMES = frozenset({"bias", "A_log", "D", "dt_bias"})


def _is_norm(module: nn.Module) -> bool:
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
    # Custom norms (e.g. a gated RMSNorm) are recognised by name: they are not torch subclasses.
    return isinstance(module, norm_types) or "Norm" in type(module).__name__


def split_decay(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of trainable parameters (with decay, without decay)."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            if param.ndim < 2 or name in NO_DECAY_NAMES or _is_norm(module):
                no_decay.append(full)
            else:
                decay.append(full)
    return decay, no_decay


def build_optimizer(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float,
                    eps: float = 1e-8) -> torch.optim.AdamW:
    decay, no_decay = split_decay(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": weight_decay, "names": decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0, "names": no_decay},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas), eps=eps)


class CosineWithWarmup:
    """lr multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> `min_ratio` at `total`.

    A callable object rather than a lambda so LambdaLR can save and restore it with its state.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0):
        if total <= warmup:
            raise ValueError(f"total steps ({total}) must exceed warmup steps ({warmup})")
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWithWarmup(warmup, total, min_ratio))
