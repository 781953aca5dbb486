"""`pip install .` (not editable) into a fresh virtualenv: the commands run from anywhere, with the CPU
kernels compiled from the installed package data and the demo checkpoint found inside the package."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.native_kernels import HEADERS as MAMBA2_HEADERS
from model.native_kernels import SOURCES as MAMBA2_SOURCES
from model.render.native import HEADERS as RASTERIZER_HEADERS
from model.render.native import SOURCES as RASTERIZER_SOURCES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_non_editable_install_runs_the_demo(tmp_path):
    # A copy of the tree, so the build's build/ and *.egg-info never land in the checkout; removed once
    # installed, so nothing can be read from it afterwards.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "__pycache__", "build", "*.egg-info", "outputs"))
    venv = tmp_path / "venv"
    # Without a pip of its own: the system's pip and setuptools build and install into it. The system
    # site-packages hold every dependency (torch included): pip must resolve nothing.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", TORCH_EXTENSIONS_DIR=str(tmp_path / "extensions"))
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              str(source)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([python, "-c", "import importlib.metadata as m, model; print(model.__file__); "
                            "print(*m.files('longlrm-splat'), sep='\\n')"], env=env, cwd=work, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    site = Path(where[0]).parent.parent
    assert site.is_relative_to(venv), where[0]  # the installed copy, not the checkout
    installed = [Path(f) for f in where[1:]]
    assert not [f for f in installed if len(f.parts) == 1 and f.suffix == ".py"]  # no top-level infer / evaluate
    csrc = sorted(f.name for f in (site / "model" / "csrc").iterdir())
    needed = RASTERIZER_SOURCES + RASTERIZER_HEADERS + MAMBA2_SOURCES + MAMBA2_HEADERS
    assert set(needed) <= set(csrc), set(needed) - set(csrc)

    out = work / "demo"
    run = subprocess.run([str(venv / "bin" / "longlrm-infer"), "--out", str(out)], env=env, cwd=work,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    # a fresh extension folder: both libraries were compiled from the installed sources
    assert "compiling the CPU rasterizer" in run.stderr and "compiling the network's CPU kernels" in run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "gaussians.ply").stat().st_size > 0 and metrics["num_targets"] > 0 and metrics["mean"]["psnr"] > 10
    assert str(site / "model" / "checkpoints" / "demo" / "model.safetensors") in run.stdout
    for command in ("longlrm-evaluate", "longlrm-refine", "longlrm-view"):
        shown = subprocess.run([str(venv / "bin" / command), "--help"], env=env, cwd=work, capture_output=True,
                               text=True, timeout=300)
        assert shown.returncode == 0 and shown.stdout.startswith("usage: "), shown.stderr
