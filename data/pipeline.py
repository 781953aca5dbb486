"""From an opened Scene to a Sample: view selection -> decode -> FoV zoom -> resize -> pose normalisation.

The one sample path for training, inference and evaluation. Selection and building are separate
steps so the streaming dataset can select views from the cameras alone, drop the other frames'
encoded bytes, and decode only what it keeps. Training draws windows and may crop (square stages,
FoV zoom); a forward pass on a whole capture (`capture_sample`: infer.py, evaluate.py, refinement)
never crops: whole frames are resized, intrinsics scaled per axis, exactly as the official
evaluation feeds the released checkpoint.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from model.cameras import Cameras

from .batch import Sample
from .config import DataConfig
from .errors import SceneError
from .normalize import normalize_poses
from .resize import full_frame_size, inference_size, view_box
from .scene import Scene
from .view_sampling import Selection, sample_train_views, select_eval_views, select_views

log = logging.getLogger("data")

MODES = ("train", "eval")


class SampleBuilder:
    """size: (H, W) every sample is resized to, whole frames, no crop and no FoV zoom (a forward pass
    on a capture); None: the config's training recipe."""

    def __init__(self, config: DataConfig, mode: str = "train", size: tuple[int, int] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.config = config
        self.mode = mode
        self.size = size

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
        if self.size is not None:
            return self.size
        if r.mode == "square":
            return r.size, r.size
        return full_frame_size(height, width, r.size, r.multiple)

    def build(self, scene: Scene, selection: Selection, rng: np.random.Generator) -> Sample:
        r = self.config.resolution
        if r.mode == "full" and r.portrait == "error" and scene.height > scene.width:
            raise SceneError(f"scene {scene.scene_id} is a portrait video ({scene.width}x{scene.height}) and "
                             "resolution.portrait='error'; set portrait='keep' to train on it at its own orientation")
        frames = list(dict.fromkeys(selection.inputs + selection.targets))  # decode each frame once
        if self.size is not None:
            box = None  # the whole frame
        else:
            zoom = self.mode == "train" and r.fov_min_ratio < 1.0
            ratio = float(rng.uniform(r.fov_min_ratio, 1.0)) if zoom else 1.0
            box = view_box(scene.height, scene.width, ratio, square=r.mode == "square")
        images, cameras = scene.load_views(frames, crop=box, size=self.output_size(scene.height, scene.width),
                                           resample=r.resample)
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


def capture_sample(scene: Scene, config: DataConfig, holdout: bool,
                   size: tuple[int, int] | None = None) -> tuple[Selection, Sample]:
    """The views of one capture for a forward pass: (which frames, the sample the network is fed).

    config: `views.num_inputs` inputs (`views.eval_every`: the held-out fold), `resolution` (the
    checkpoint's training recipe: the size rule and the resampling filter), `scene_scale`,
    `eval_cache_dir`. holdout: hold out every `eval_every`th frame as a target. size: (H, W) to use
    instead of `inference_size` of the capture. Deterministic: nothing is drawn at random.
    """
    selection = select_views(scene, config.views.num_inputs, config.views.eval_every if holdout else None,
                             config.eval_cache_dir)
    if size is None:
        size, followed = inference_size(scene.height, scene.width, config.resolution)
        if followed:
            r = config.resolution
            trained = f"{r.size}x{r.size}" if r.mode == "square" else f"short side {r.size}"
            log.info("frames are %dx%d, far from the aspect of the checkpoint's training size (%s): resizing to "
                     "%dx%d, about as many pixels at the frames' own aspect, instead of stretching them",
                     scene.width, scene.height, trained, size[1], size[0])
    builder = SampleBuilder(config, "eval", size=size)
    return selection, builder.build(scene, selection, np.random.default_rng(0))
