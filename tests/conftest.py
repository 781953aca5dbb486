"""Fixtures shared by the test modules: a written tiny checkpoint, a small procedural scene folder, and
the CPU kernels built before tests start child processes that cannot write."""

import pytest
import torch

from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from tests.support import write_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random network as a .safetensors file (tests.support.write_checkpoint)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory):
    """A DL3DV-layout procedural room: 20 frames of 96x48 (frames 0, 8, 16 held out with --eval)."""
    out = tmp_path_factory.mktemp("scene") / "room"
    write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=20, width=96, height=48, seed=5)), out)
    return out


@pytest.fixture(scope="session")
def rasterizer_built():
    """The CPU kernels compiled here, so child processes that cannot write large files only load them."""
    from model import native_kernels
    from model.render.native import load_ops

    load_ops()
    native_kernels.kernels("build", torch.zeros(1))
