"""Loading a reconstruction checkpoint for inference: the project's own or the official Long-LRM file.

The project's checkpoints are `model.safetensors` files (alone, or inside a training checkpoint or
run directory) whose metadata carries the model config, so the file rebuilds its own network, and
the training config, whose data settings give inference its default resolution and view count.
The official release is a torch `.pt` file; it needs the `paper` network and scene_scale 1.35.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.build import build_model
from model.config import ModelConfig
from model.longlrm import LongLRM
from model.official_checkpoint import load_official_checkpoint
from model.typed_config import from_dict

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = PACKAGE_ROOT / "checkpoints" / "demo" / "model.safetensors"


@dataclass
class LoadedModel:
    model: LongLRM
    source: str  # "ours" or "official"
    path: Path
    resolution: dict = field(default_factory=dict)  # data.resolution of the training run (mode, size, ...)
    num_views: int | None = None  # input views the model was trained with
    scene_scale: float = 1.0


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a checkpoint for inference; every failure is a ValueError/FileNotFoundError naming the fix."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass --checkpoint with a .safetensors file, "
                                "a training run directory or the official Long-LRM .pt file")
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            official = load_official_checkpoint(path, device=device)
        except (ValueError, RuntimeError, OSError, EOFError) as err:
            raise ValueError(f"checkpoint {path} could not be loaded as an official Long-LRM checkpoint: {err}") from None
        # The release was trained at 960x544 with 32 inputs; its users report scene_scale 1.35.
        return LoadedModel(official.model.eval(), "official", path, {"mode": "full", "size": 540, "multiple": 16},
                           32, 1.35)
    return _load_ours(path, device)


def _load_ours(path: Path, device) -> LoadedModel:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from train.checkpoint import resolve_checkpoint

    file = path if path.is_file() else resolve_checkpoint(path) / "model.safetensors"
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {file} is not a readable safetensors file ({err}); re-download or re-export it") from None
    if "model_config" not in meta:
        raise ValueError(f"checkpoint {file} carries no model config in its metadata, so its architecture is unknown; "
                         "use a checkpoint written by this project's trainer")
    try:
        config = from_dict(ModelConfig, json.loads(meta["model_config"]))
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {file} has a model config this version cannot build: {err}") from None
    model = build_model(config, device="meta")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"checkpoint {file} does not match the architecture its config describes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}, mis-shaped {wrong[:3]}); it is corrupt "
                         "or from another version")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    train_config = json.loads(meta.get("train_config", "{}") or "{}")
    data = train_config.get("data", {})
    return LoadedModel(model.to(device).eval(), "ours", file, data.get("resolution", {}),
                       data.get("views", {}).get("num_inputs"), float(data.get("scene_scale", 1.0)))
