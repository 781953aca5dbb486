"""Typed settings of the data pipeline.

The official training stages set them in their YAML files (train/configs/stage1.yaml ... finetune16.yaml,
read by name with `train.config.stage_config`):
    stage1      256x256 square crop, 32 inputs / 8 targets from a 64-128 frame window
    stage2      512x512, same sampling
    stage3      full frame 960x540 -> 960x544, whole video, FoV augmentation r ~ U[0.77, 1]
    finetune16  stage 3 with 16 inputs
Evaluation uses the same settings with mode="eval" (KMeans inputs, every 8th frame as target).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

RESOLUTION_MODES = ("square", "full")
PORTRAIT_POLICIES = ("keep", "error")
# "antialiased": bilinear widened by the downscale factor, every source pixel contributes (PIL's BILINEAR);
# "bilinear": plain 2x2 interpolation at each output pixel centre (OpenCV's INTER_LINEAR, the official
# data pipeline's resize, so what the released checkpoint was trained and evaluated on).
RESAMPLE_FILTERS = ("antialiased", "bilinear")


@dataclass
class ViewConfig:
    num_inputs: int = 32
    num_targets: int = 8
    min_frame_dist: int | None = 64  # first-to-last frame distance of the training window; None: whole video
    max_frame_dist: int | None = 128
    reverse_prob: float = 0.5
    shuffle_prob: float = 0.5
    eval_every: int = 8  # evaluation targets are frames 0, 8, 16, ...

    def __post_init__(self) -> None:
        if self.num_inputs < 1 or self.num_targets < 0:
            raise ValueError(f"need num_inputs >= 1 and num_targets >= 0, got {self.num_inputs}, {self.num_targets}")
        if (self.min_frame_dist is None) != (self.max_frame_dist is None):
            raise ValueError("min_frame_dist and max_frame_dist must both be set or both be None (whole video)")
        if self.min_frame_dist is not None and not 0 <= self.min_frame_dist <= self.max_frame_dist:
            raise ValueError(f"need 0 <= min_frame_dist <= max_frame_dist, got {self.min_frame_dist}, "
                             f"{self.max_frame_dist}")
        if self.eval_every < 2:
            raise ValueError(f"eval_every must be >= 2 so some frames remain as inputs, got {self.eval_every}")


@dataclass
class ResolutionConfig:
    mode: str = "square"  # "square": centred square, size x size; "full": whole frame, short side ~ size
    size: int = 256  # square side, or the short side for "full" (rounded to `multiple`: 540 -> 544)
    multiple: int = 16  # patch 8 x token merge 2
    portrait: str = "keep"  # full frame of a portrait video: "keep" (544x960) or "error"
    fov_min_ratio: float = 1.0  # training FoV augmentation zooms by 1/r, r ~ U[fov_min_ratio, 1]; 1 = off
    resample: str = "antialiased"  # resize filter, one of RESAMPLE_FILTERS; recorded in checkpoints for inference

    def __post_init__(self) -> None:
        if self.mode not in RESOLUTION_MODES:
            raise ValueError(f"resolution mode must be one of {RESOLUTION_MODES}, got {self.mode!r}")
        if self.portrait not in PORTRAIT_POLICIES:
            raise ValueError(f"portrait must be one of {PORTRAIT_POLICIES}, got {self.portrait!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample must be one of {RESAMPLE_FILTERS}, got {self.resample!r}")
        if not 0.0 < self.fov_min_ratio <= 1.0:
            raise ValueError(f"fov_min_ratio must be in (0, 1], got {self.fov_min_ratio}")
        if self.size < 1 or self.multiple < 1:
            raise ValueError(f"size and multiple must be positive, got {self.size}, {self.multiple}")


@dataclass
class DataConfig:
    views: ViewConfig = field(default_factory=ViewConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    scene_scale: float = 1.0  # poses are scaled by 1 / (scene_scale * max |input camera coordinate|)
    distortion: str = "undistort"  # lens distortion in the source: "undistort" or "error"
    image_dir: str | None = None  # image folder override (e.g. "images_8" for DL3DV); None: the reader's default
    eval_cache_dir: str | None = None  # KMeans selections cache; None: ~/.cache/longlrm-splat

    def replace(self, **changes) -> DataConfig:
        return dataclasses.replace(self, **changes)
