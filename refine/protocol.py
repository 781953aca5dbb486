"""The views `python -m refine` trains on and scores: infer.py's, so the two commands' figures compare.

infer.py picks its input views and held-out views (every 8th frame, inputs by KMeans on the rest),
decodes them at one resolution and normalises poses on the inputs. Refinement does exactly that,
through `protocol_sample`, and trains on the inputs only, like a prediction polished by
`infer.py --refine-steps`. Pointed at a PLY in an infer.py output folder, the defaults are what that
run used (its metrics.json records the inputs, the held-out views and the size); otherwise those of
the paper's comparisons: 32 inputs, every 8th frame held out, short side 540 (960x544 for 16:9).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from data.batch import Sample
from data.scene import Scene
from inference.views import Resolution, choose_views, load_sample
from model.cameras import Cameras


@dataclass(frozen=True)
class Protocol:
    num_views: int = 32
    resolution: Resolution = field(default_factory=lambda: Resolution(mode="full", size=540, multiple=16))
    holdout: bool = True


def recorded_protocol(ply: Path) -> Protocol | None:
    """What infer.py used for the output folder holding `ply` (from its metrics.json), or None."""
    record = ply.parent / "metrics.json"
    if not (record.is_file() and (ply.parent / "cameras.json").is_file()):
        return None
    try:
        metrics = json.loads(record.read_text())
        return Protocol(int(metrics["num_inputs"]), Resolution(height=int(metrics["height"]), width=int(metrics["width"])),
                        int(metrics["num_targets"]) > 0)
    except (ValueError, KeyError, TypeError):
        return None  # a metrics.json of another tool: not an infer.py output folder


def protocol_sample(scene: Scene, protocol: Protocol, scene_scale: float = 1.0) -> Sample:
    """infer.py's view choice, decoding and pose normalisation (poses in the sample's normalised frame;
    scene_scale matters to a network's prediction only, refinement works in any frame)."""
    inputs, targets = choose_views(scene, protocol.num_views, protocol.holdout)
    return load_sample(scene, inputs, targets, protocol.resolution, scene_scale)


def training_views(sample: Sample, with_held_out: bool) -> tuple[Tensor, Cameras, list[int] | None]:
    """What `refine` takes: the sample's inputs and, with_held_out, its held-out views after them, to be
    scored during the run: (images [V(+T), H, W, 3], cameras [V(+T)], held-out indices [T] or None)."""
    if not with_held_out:
        return sample.input_images, sample.input_cameras, None
    images = torch.cat([sample.input_images, sample.target_images])
    cameras = Cameras.cat([sample.input_cameras, sample.target_cameras])
    views = len(sample.input_images)
    return images, cameras, list(range(views, len(images)))
