"""Settings of per-scene refinement, with graphdeco 3DGS defaults and named presets.

Presets:
  classic  graphdeco's 30k-step optimisation from a point cloud: SH degree raised every 1000 steps,
           densification from 500 to 15k every 100 steps, opacity reset every 3000.
  short    post-optimisation of predicted Gaussians: 500 steps, full SH degree from the start,
           no densification and no opacity reset (a prediction already has one Gaussian per pixel, and
           a reset would throw away its opacities for a run too short to recover them).
`robust=True` switches to SpotlessSplats: masked L1, no opacity reset, utilization-based pruning.

A preset is written for its own run length. `preset(name, steps=N)` (or `config.for_steps(N)`)
scales the schedule's milestones by N / preset steps (as gsplat's `steps_scaler` does): densification
and robust pruning in the first half of any run, the SH degree raised over its first tenth, the
position learning rate decayed over all of it. graphdeco changes the set of Gaussians only in the
first half of its 30k steps and trains the second half undisturbed; so does every run.
The intervals keep their values, as they measure the data and the optimiser, not the run: 100 steps
of gradients decide a densification (scaled down, with one view per step, a short run densifies so
often that its Gaussians multiply tenfold and it ends worse), and opacities need hundreds of steps
to grow back after a reset (scaled down, resets leave a short run nearly transparent for long).
Resets, like all density control, stay in the first half of the run (schedule.py): a run shorter
than 6000 steps has only the white-background reset at the start of densification, which clears
a random start's fog of semi-transparent points.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RefineConfig:
    steps: int = 30_000

    # Adam learning rates per parameter group (graphdeco). Positions are also multiplied by
    # spatial_lr_scale, so they move at the same rate relative to the scene whatever its units.
    position_lr_init: float = 1.6e-4
    position_lr_final: float = 1.6e-6
    position_lr_delay_steps: int = 0
    position_lr_delay_mult: float = 0.01
    position_lr_max_steps: int | None = None  # None: decay over `steps`
    feature_lr: float = 2.5e-3  # f_dc; f_rest uses feature_lr / 20
    opacity_lr: float = 0.05
    scaling_lr: float = 5e-3
    rotation_lr: float = 1e-3
    spatial_lr_scale: float | None = None  # None: 1.1 x max distance of camera centres from their mean

    # Loss (1 - lambda) L1 + lambda (1 - SSIM), rendered over a constant background.
    lambda_dssim: float = 0.2
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    # Spherical harmonics: start at this degree, raise by one every interval, up to the Gaussians' degree.
    sh_degree_start: int = 0
    sh_degree_interval: int = 1000

    # Adaptive density control (graphdeco).
    densify: bool = True
    densify_from: int = 500
    densify_until: int = 15_000
    densify_interval: int = 100
    densify_grad_threshold: float = 2e-4  # on the NDC-scaled screen-space gradient, see densify.py
    percent_dense: float = 0.01
    opacity_reset_interval: int = 3000  # 0 disables
    min_opacity: float = 0.005
    max_screen_size: float = 20.0  # pixels of projected radius; applied once past the first reset period

    # SpotlessSplats robust optimisation.
    robust: bool = False
    robust_percentile: float = 0.7
    robust_bin_width: float = 1e-3
    robust_hist_decay: float = 0.95
    robust_schedule_beta: float = -3e-3
    ubp_threshold: float = 1e-14
    ubp_from: int = 500
    ubp_until: int = 15_000
    ubp_interval: int = 100

    seed: int = 0
    backend: str = "auto"  # renderer backend: auto | torch | cpu | gsplat
    eval_every: int = 0  # evaluate held-out views every N steps; 0: only before and after

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # NaN passes every range check below
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{f.name} must be finite, got {value}")
        for name in ("steps", "sh_degree_interval", "densify_interval", "ubp_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("opacity_reset_interval", "eval_every", "sh_degree_start", "position_lr_delay_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.lambda_dssim <= 1.0:
            raise ValueError(f"lambda_dssim must lie in [0, 1], got {self.lambda_dssim}")
        if not 0.0 < self.robust_percentile < 1.0:
            raise ValueError(f"robust_percentile must lie in (0, 1), got {self.robust_percentile}")
        if len(self.background) != 3:
            raise ValueError(f"background must be an RGB triple, got {self.background!r}")
        if not 0.0 <= self.min_opacity < 1.0:
            raise ValueError(f"min_opacity must lie in [0, 1) (an opacity of 1 or more would prune every Gaussian), "
                             f"got {self.min_opacity}")
        if self.spatial_lr_scale is not None and self.spatial_lr_scale <= 0:
            raise ValueError(f"spatial_lr_scale must be positive, got {self.spatial_lr_scale}")

    def for_steps(self, steps: int) -> RefineConfig:
        """This config for a run of `steps`: milestones scaled by steps / self.steps, intervals kept."""
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        factor = steps / self.steps

        def at(value: int) -> int:
            return round(value * factor)

        return self.replace(
            steps=steps,
            position_lr_delay_steps=at(self.position_lr_delay_steps),
            position_lr_max_steps=None if self.position_lr_max_steps is None else max(1, at(self.position_lr_max_steps)),
            sh_degree_interval=max(1, at(self.sh_degree_interval)),
            densify_from=at(self.densify_from),
            densify_until=at(self.densify_until),
            ubp_from=at(self.ubp_from),
            ubp_until=at(self.ubp_until),
        )

    @property
    def position_max_steps(self) -> int:
        return self.position_lr_max_steps or self.steps

    @property
    def resets_opacity(self) -> bool:
        # SpotlessSplats replaces the reset by utilization-based pruning: a reset inflates the residuals
        # for a while and would corrupt the running error histogram that separates outliers.
        return self.opacity_reset_interval > 0 and not self.robust

    def replace(self, **changes) -> RefineConfig:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def preset(name: str, steps: int | None = None, **changes) -> RefineConfig:
        """A named preset scaled to a run of `steps` (None: the preset's own length), then field changes
        taken as given, e.g. `preset("short", steps=300, robust=True)`."""
        if name not in PRESETS:
            raise ValueError(f"unknown refinement preset {name!r}; expected one of {sorted(PRESETS)}")
        config = PRESETS[name] if steps is None else PRESETS[name].for_steps(steps)
        return dataclasses.replace(config, **changes)


PRESETS = {
    "classic": RefineConfig(),
    "short": RefineConfig(
        steps=500,
        sh_degree_start=3,
        densify=False,
        opacity_reset_interval=0,
        # The error histogram is meaningful from the first step when starting from a prediction,
        # so the Bernoulli warm-up can be shorter than from scratch (alpha ~ 0.05 after 300 steps).
        robust_schedule_beta=-1.5e-2,
        # Robust pruning in the first half only, like graphdeco's density control: the second half
        # trains the Gaussians that remain.
        ubp_from=100,
        ubp_until=250,
        ubp_interval=50,
    ),
}
