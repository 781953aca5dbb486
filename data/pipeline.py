"""From an opened Scene to a Sample: view selection -> decode -> FoV zoom -> resize -> pose normalisation.

Selection and building are separate steps so the streaming dataset can select views from the
cameras alone, drop the other frames' encoded bytes, and decode only what it keeps.
"""

from __future__ import annotations

import numpy as np
import torch

from model.cameras import Cameras

from .batch import Sample
from .config import DataConfig
from .errors import SceneError
from .normalize import normalize_poses
from .resize import full_frame_size, view_box
from .scene import Scene
from .view_sampling import Selection, sample_train_views, select_eval_views

MODES = ("train", "eval")


class SampleBuilder:
    def __init__(self, config: DataConfig, mode: str = "train"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.config = config
        self.mode = mode

    def select(self, scene: Scene, rng: np.random.Generator) -> Selection:
        v = self.config.views
        if self.mode == "train":
            return sample_train_views(len(scene), v.num_inputs, v.num_targets, rng, v.min_frame_dist,
                                      v.max_frame_dist, v.reverse_prob, v.shuffle_prob, scene.scene_id)
        return select_eval_views(scene.c2w, v.num_inputs, v.eval_every, scene.scene_id,
                                 self.config.eval_cache_dir, scene.extras.get("eval_inputs"))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the samples built from frames of height x width."""
        r = self.config.resolution
        if r.mode == "square":
            return r.size, r.size
        return full_frame_size(height, width, r.size, r.multiple)

    def build(self, scene: Scene, selection: Selection, rng: np.random.Generator) -> Sample:
        r = self.config.resolution
        if r.mode == "full" and r.portrait == "error" and scene.height > scene.width:
            raise SceneError(f"scene {scene.scene_id} is a portrait video ({scene.width}x{scene.height}) and "
                             "resolution.portrait='error'; set portrait='keep' to train on it at its own orientation")
        frames = list(dict.fromkeys(selection.inputs + selection.targets))  # decode each frame once
        ratio = float(rng.uniform(r.fov_min_ratio, 1.0)) if self.mode == "train" and r.fov_min_ratio < 1.0 else 1.0
        box = view_box(scene.height, scene.width, ratio, square=r.mode == "square")
        images, cameras = scene.load_views(frames, crop=box, size=self.output_size(scene.height, scene.width))
        pos = {f: i for i, f in enumerate(frames)}
        # inputs are distinct and come first in `frames`: a slice, not a copy of the largest tensor
        ins = slice(0, len(selection.inputs))
        tgt = [pos[f] for f in selection.targets]
        # Normalised in float64 from the scene's own poses, handed out as float32 (the transform stays float64).
        in_c2w, tgt_c2w, m = normalize_poses(scene.c2w[selection.inputs], scene.c2w[selection.targets],
                                             self.config.scene_scale)
        return Sample(
            scene_id=scene.scene_id,
            input_images=images[ins],
            input_cameras=Cameras(cameras.intrinsics[ins], in_c2w.float(), cameras.width, cameras.height),
            target_images=images[tgt],
            target_cameras=Cameras(cameras.intrinsics[tgt], tgt_c2w.float(), cameras.width, cameras.height),
            normalization=m,
            input_indices=torch.tensor(selection.inputs, dtype=torch.long),
            target_indices=torch.tensor(selection.targets, dtype=torch.long),
        )

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Sample:
        return self.build(scene, self.select(scene, rng), rng)
