"""The embedded default scene: a procedural room generated deterministically, never seen in training
(training uses seeds from 0 and held-out evaluation seeds from 1,000,000)."""

from __future__ import annotations

from data.procedural import ProceduralConfig, generate_scene
from data.scene import Scene

DEMO_SEED = 2_000_000
DEMO_CONFIG = ProceduralConfig(num_frames=48, width=128, height=72, path="walk", seed=DEMO_SEED)


def demo_scene() -> Scene:
    generated = generate_scene(DEMO_CONFIG)
    return Scene.from_arrays(f"procedural-demo-{DEMO_SEED}", generated.images, generated.intrinsics, generated.c2w)
