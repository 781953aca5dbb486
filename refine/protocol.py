"""The views `python -m refine` trains on and scores: infer.py's, so the two commands' figures compare.

infer.py picks its input views and held-out views (every 8th frame, inputs by KMeans on the rest),
decodes them at one resolution and normalises poses on the inputs. Refinement does exactly that,
through `protocol_sample`, and trains on the inputs only, like a prediction polished by
`infer.py --refine-steps`. Pointed at a PLY in an infer.py (or refinement) output folder, the defaults
are what that run used (its metrics.json records the inputs, the held-out views and the size); otherwise those of
the paper's comparisons: 32 inputs, every 8th frame held out, short side 540 (960x544 for 16:9).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from data.batch import Sample
from data.config import ResolutionConfig
from data.pipeline import capture_sample
from data.scene import Scene
from inference.reconstruct import sample_recipe
from model.cameras import Cameras


@dataclass(frozen=True)
class Protocol:
    num_views: int = 32
    resolution: str | None = None  # as infer.py's --resolution (a short side or WxH); None: short side 540
    holdout: bool = True
    resample: str = "antialiased"  # the resize filter (the checkpoint's, in an infer.py run)


def recorded_protocol(ply: Path) -> Protocol | None:
    """What infer.py, or an earlier refinement, used for the output folder holding `ply` (from its
    metrics.json), or None."""
    record = ply.parent / "metrics.json"
    if not (record.is_file() and (ply.parent / "cameras.json").is_file()):
        return None
    try:
        metrics = json.loads(record.read_text())
        used = metrics.get("protocol", metrics)  # a refinement's metrics.json nests it, infer.py's does not
        resample = used.get("resample") or metrics.get("preprocessing", {}).get("resample", Protocol.resample)
        return Protocol(int(used["num_inputs"]), f"{int(used['width'])}x{int(used['height'])}",
                        int(used["num_targets"]) > 0, resample)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a metrics.json of another tool: not an output folder of ours


def protocol_sample(scene: Scene, protocol: Protocol) -> Sample:
    """infer.py's view choice, decoding and pose normalisation (data/pipeline.py `capture_sample`;
    poses in the sample's normalised frame: refinement works in any frame, so no scene_scale)."""
    base = ResolutionConfig(mode="full", size=540, resample=protocol.resample)
    config, size = sample_recipe(base, 1.0, protocol.num_views, protocol.resolution)
    return capture_sample(scene, config, protocol.holdout, size)[1]


def training_views(sample: Sample, with_held_out: bool) -> tuple[Tensor, Cameras, list[int] | None]:
    """What `refine` takes: the sample's inputs and, with_held_out, its held-out views after them, to be
    scored during the run: (images [V(+T), H, W, 3], cameras [V(+T)], held-out indices [T] or None)."""
    if not with_held_out:
        return sample.input_images, sample.input_cameras, None
    images = torch.cat([sample.input_images, sample.target_images])
    cameras = Cameras.cat([sample.input_cameras, sample.target_cameras])
    views = len(sample.input_images)
    return images, cameras, list(range(views, len(images)))
