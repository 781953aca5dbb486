"""Settings of the capture step: how many frames, how large, and how hard COLMAP works on them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptureConfig:
    max_frames: int = 150  # frames kept from a video (or a photo folder); SfM cost grows with it
    frame_size: int = 960  # longest side of the written frames, pixels (smaller sources are not enlarged)
    # Photo sets up to this size are matched exhaustively (every pair); larger ones match each photo with
    # its most similar ones, found by a vocabulary tree trained on the set's own features.
    exhaustive_max: int = 60
    overlap: int = 10  # video: each frame is matched with the next `overlap` frames (and 2^k further ones)
    loop_every: int = 10  # video: every this many frames, look for a loop closure among all earlier frames
    retrieve: int = 20  # similar images matched per frame (loop closure, large photo sets)
    max_features: int = 8192  # SIFT features per frame
    min_registered: int = 2  # refuse when the largest model registers fewer frames than this
    min_registered_share: float = 0.5  # ... or fewer than this share of the frames
    num_threads: int = -1  # threads of feature extraction, retrieval and matching (-1: all cores); the
    # results do not depend on it, and mapping always runs on one thread (see sfm.py)
    seed: int = 0  # COLMAP's random seed (RANSAC, retrieval, mapping)

    def __post_init__(self) -> None:
        for name in ("max_frames", "frame_size", "exhaustive_max", "overlap", "loop_every", "retrieve",
                     "max_features", "min_registered"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2 (SfM needs two views), got {self.max_frames}")
        if self.frame_size < 64:
            raise ValueError(f"frame_size must be at least 64 pixels for feature matching, got {self.frame_size}")
        if not 0.0 <= self.min_registered_share <= 1.0:
            raise ValueError(f"min_registered_share must be in [0, 1], got {self.min_registered_share}")

    def replace(self, **changes) -> CaptureConfig:
        return dataclasses.replace(self, **changes)
