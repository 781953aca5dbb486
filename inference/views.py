"""Choosing, decoding and normalising the views of one scene for a forward pass.

With `holdout`, the DL3DV-140 protocol: every 8th frame is a target, inputs are chosen by KMeans
from the rest. Without it, all frames are candidates for the inputs and there are no targets.
Fewer frames than requested inputs: all frames are used, with a warning, down to MIN_VIEWS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from data.batch import Sample
from data.errors import SceneError
from data.normalize import normalize_poses
from data.resize import center_box, full_frame_size
from data.scene import Scene
from data.view_sampling import eval_targets, kmeans_inputs, select_eval_views
from model.cameras import Cameras

log = logging.getLogger("inference")

MIN_VIEWS = 2  # the pose normalisation and any reconstruction need at least two viewpoints
HOLDOUT_EVERY = 8


@dataclass
class Resolution:
    """Either an explicit (height, width) or a rule: short side `size` ("full") or a square ("square")."""

    mode: str = "full"
    size: int = 540
    multiple: int = 16
    height: int | None = None
    width: int | None = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.height is not None:
            return self.height, self.width
        if self.mode == "square":
            return self.size, self.size
        return full_frame_size(height, width, self.size, self.multiple)


def parse_resolution(text: str) -> Resolution:
    """`540` (short side, full frame) or `960x544` (width x height); multiples of 16."""
    try:
        if "x" in text.lower():
            width, height = (int(v) for v in text.lower().split("x"))
        else:
            width = height = int(text)
    except ValueError:
        raise ValueError(f"--resolution {text!r} must be a short side like 544 or a size like 960x544") from None
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        raise ValueError(f"--resolution {text} must use positive multiples of 16 (the network's patch size "
                         "times its token merge), e.g. 960x544 or 544")
    if "x" in text.lower():
        return Resolution(height=height, width=width)
    return Resolution(mode="full", size=height)


def choose_views(scene: Scene, num_views: int, holdout: bool) -> tuple[list[int], list[int]]:
    """(input frame indices, target frame indices)."""
    n = len(scene)
    targets = eval_targets(n, HOLDOUT_EVERY) if holdout else []
    available = n - len(targets)
    if available < MIN_VIEWS:
        raise SceneError(f"scene {scene.scene_id} has {n} frames, leaving {available} input views"
                         f"{' after holding out every 8th frame' if holdout else ''}; at least {MIN_VIEWS} are needed")
    if available < num_views:
        log.warning("scene %s has only %d usable input frames, fewer than the %d requested: using all of them",
                    scene.scene_id, available, num_views)
        num_views = available
    if holdout:
        return select_eval_views(scene.c2w, num_views, HOLDOUT_EVERY, scene.scene_id).inputs, targets
    if num_views == n:
        return list(range(n)), []
    return kmeans_inputs(scene.c2w, num_views, every=None, scene_id=scene.scene_id), []


def load_sample(scene: Scene, inputs: list[int], targets: list[int], resolution: Resolution,
                scene_scale: float) -> Sample:
    """Decode the views, crop to the output aspect, resize, and normalise poses on the inputs."""
    height, width = resolution.output_size(scene.height, scene.width)
    if scene.width * height >= scene.height * width:  # source is wider: crop the sides
        box = center_box(scene.height, scene.width, scene.height, round(scene.height * width / height))
    else:
        box = center_box(scene.height, scene.width, round(scene.width * height / width), scene.width)
    frames = list(dict.fromkeys(inputs + targets))
    images, cameras = scene.load_views(frames, crop=box, size=(height, width))
    pos = {f: i for i, f in enumerate(frames)}
    in_idx, tgt_idx = [pos[f] for f in inputs], [pos[f] for f in targets]
    in_c2w, tgt_c2w, m = normalize_poses(scene.c2w[inputs], scene.c2w[targets], scene_scale)
    return Sample(
        scene_id=scene.scene_id,
        input_images=images[in_idx],
        input_cameras=Cameras(cameras.intrinsics[in_idx].float(), in_c2w.float(), width, height),
        target_images=images[tgt_idx],
        target_cameras=Cameras(cameras.intrinsics[tgt_idx].float(), tgt_c2w.float(), width, height),
        normalization=m.double(),
        input_indices=torch.tensor(inputs, dtype=torch.long),
        target_indices=torch.tensor(targets, dtype=torch.long),
    )
