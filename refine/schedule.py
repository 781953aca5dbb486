"""When things happen during refinement: the position learning rate and density control.

`ExponentialLR` is graphdeco's position learning-rate schedule (`get_expon_lr_func`): log-linear interpolation from `lr_init` at step 0 to `lr_final` at `max_steps` (held afterwards),
optionally multiplied by a delay factor that rises from `lr_delay_mult` to 1 along a quarter sine
over the first `lr_delay_steps` steps. Exponential decay suits positions: early steps move Gaussians
across the scene, late steps only nudge them by sub-pixel amounts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import RefineConfig


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


@dataclass(frozen=True)
class DensitySchedule:
    """The steps (1-based, as graphdeco counts) at which density control acts in one run.

    graphdeco's rules: gradient statistics accumulate while step < densify_until; clone/split/prune
    every densify_interval steps after densify_from; opacity reset every opacity_reset_interval steps
    while densifying, and once at densify_from on a white background; SpotlessSplats prunes unused
    Gaussians every ubp_interval steps after ubp_from while step < ubp_until. On top of them, nothing
    changes the set of Gaussians or resets their opacity in the second half of a run: the Gaussians
    then train undisturbed, and a run never ends on a fresh reset (nearly transparent) or on
    untrained clones. graphdeco's own 30k-step run already keeps to this (it stops at 15k), and so
    does every config scaled to its run (`RefineConfig.for_steps`); the rule clips hand-set numbers.
    """

    config: RefineConfig
    white_background: bool = False

    def _first_half(self, step: int) -> bool:
        return 2 * step <= self.config.steps

    def accumulates(self, step: int) -> bool:
        """Whether this step's screen-space gradients count towards the next densification."""
        c = self.config
        return c.densify and step < c.densify_until

    def densifies(self, step: int) -> bool:
        c = self.config
        return (self.accumulates(step) and step > c.densify_from and step % c.densify_interval == 0
                and self._first_half(step))

    def resets_opacity(self, step: int) -> bool:
        c = self.config
        if not (c.resets_opacity and self.accumulates(step) and self._first_half(step)):
            return False
        return step % c.opacity_reset_interval == 0 or (self.white_background and step == c.densify_from)

    def tracks_utilization(self, step: int) -> bool:
        c = self.config
        return c.robust and step < c.ubp_until

    def prunes_unused(self, step: int) -> bool:
        c = self.config
        return (self.tracks_utilization(step) and step > c.ubp_from and step % c.ubp_interval == 0
                and self._first_half(step))

    def events(self) -> dict[str, list[int]]:
        """Every step at which each kind of event happens: {"densify", "opacity_reset", "ubp"}."""
        steps = range(1, self.config.steps + 1)
        return {"densify": [s for s in steps if self.densifies(s)],
                "opacity_reset": [s for s in steps if self.resets_opacity(s)],
                "ubp": [s for s in steps if self.prunes_unused(s)]}
