"""The package roots export the public names (the functions and classes, not modules), whatever was imported first."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import types
{first}
from data import Scene, find_scenes, open_scene
from inference import Options, Result, demo_scene, reconstruct
from model import Cameras, Gaussians, LongLRM, build_model, load_model, rasterize
names = [Scene, find_scenes, open_scene, Options, Result, demo_scene, reconstruct, Cameras, Gaussians, LongLRM,
         build_model, load_model, rasterize]
assert not [n for n in names if isinstance(n, types.ModuleType)], names
assert open_scene.__module__ == "data.open_scene" and reconstruct.__module__ == "inference.reconstruct"
"""
FIRST = ["", "import data.open_scene, inference.reconstruct",
         "from data.open_scene import find_scenes\nfrom inference.reconstruct import predict"]


@pytest.mark.parametrize("first", FIRST)
def test_exported_names_are_not_their_modules(first):
    proc = subprocess.run([sys.executable, "-c", CHECK.format(first=first)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
