"""Helpers the test modules share; the fixtures built on them are in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from inference.cli import EXIT_BAD_INPUT
from model.build import build_model
from model.cameras import Cameras
from model.typed_config import to_dict


def random_cameras(b: int, v: int, height: int, width: int, seed: int = 0) -> Cameras:
    """Cameras [b, v] with random proper rotations and positions, a centred principal point."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(b, v, 3, 3, generator=gen))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    c2w = torch.eye(4).repeat(b, v, 1, 1)
    c2w[..., :3, :3] = q * torch.det(q)[..., None, None]  # proper rotations
    c2w[..., :3, 3] = torch.randn(b, v, 3, generator=gen)
    intr = torch.tensor([0.9 * width, 0.9 * width, width / 2, height / 2]).repeat(b, v, 1)
    return Cameras(intr, c2w, width, height)


def random_images(b: int, v: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, v, h, w, 3, generator=torch.Generator().manual_seed(seed))  # [b, v, h, w, 3]


def write_checkpoint(path: Path, preset: str = "tiny") -> Path:
    """A randomly initialised network of `preset` saved as the trainer saves one (its config in the
    metadata), trained, it says, at short side 32 with 4 input views."""
    model = build_model(preset)
    meta = {"model_config": json.dumps(to_dict(model.config)),
            "train_config": json.dumps({"data": {"resolution": {"mode": "full", "size": 32}, "views": {"num_inputs": 4}}})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


def one_error_line(code: int, err: str, fragment: str) -> str:
    """The single `error:` line of a refused run (exit code 2, no traceback), which must contain `fragment`."""
    assert code == EXIT_BAD_INPUT, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    return lines[0]
