"""The graphdeco position learning-rate schedule (`get_expon_lr_func`).

Log-linear interpolation from `lr_init` at step 0 to `lr_final` at `max_steps` (held afterwards),
optionally multiplied by a delay factor that rises from `lr_delay_mult` to 1 along a quarter sine
over the first `lr_delay_steps` steps. Exponential decay suits positions: early steps move Gaussians
across the scene, late steps only nudge them by sub-pixel amounts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExponentialLR:
    lr_init: float
    lr_final: float
    max_steps: int
    lr_delay_steps: int = 0
    lr_delay_mult: float = 1.0

    def __post_init__(self) -> None:
        if self.lr_init < 0 or self.lr_final < 0:
            raise ValueError(f"learning rates must be >= 0, got {self.lr_init} -> {self.lr_final}")
        if (self.lr_init == 0) != (self.lr_final == 0):
            raise ValueError("log-linear interpolation needs lr_init and lr_final both > 0 (or both 0)")
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")

    def __call__(self, step: int) -> float:
        if step < 0 or self.lr_init == 0:
            return 0.0
        delay = 1.0
        if self.lr_delay_steps > 0:
            ramp = min(max(step / self.lr_delay_steps, 0.0), 1.0)
            delay = self.lr_delay_mult + (1 - self.lr_delay_mult) * math.sin(0.5 * math.pi * ramp)
        t = min(step / self.max_steps, 1.0)
        return delay * math.exp(math.log(self.lr_init) * (1 - t) + math.log(self.lr_final) * t)
