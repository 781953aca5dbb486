"""`load_model(path)`: the one loader of trained networks, the project's own or the official Long-LRM file.

The project's checkpoints are `model.safetensors` files (alone, or inside a training checkpoint or
run directory) whose metadata carries the model config, so the file rebuilds its own network, and
the training config, whose data settings give inference its default resolution and view count.
The official release is a torch `.pt` file; it needs the `paper` network.

A run directory holds `checkpoints/step_<00000000>/` folders (train/checkpoint.py writes them); the
layout is defined here, where every reader of it looks.

Each loaded checkpoint carries the `Preprocessing` it was trained with, so a forward pass feeds it
what it was trained on and prunes its output the same way: the project's files record theirs in
their training config; the official file gets the official values (model/official_checkpoint.py).
Command-line options override any field, and metrics.json echoes what was used.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from data.config import ResolutionConfig
from model.build import build_model
from model.config import ModelConfig
from model.longlrm import LongLRM
from model.official_checkpoint import (OFFICIAL_RECIPE, OfficialCheckpoint, OfficialRecipe, check_state_dict,
                                       load_official_checkpoint)
from model.typed_config import from_dict

_HERE = Path(__file__).resolve().parent
# A wheel ships checkpoints/ inside this package (setup.py); a source checkout keeps it at its top level.
_SHIPPED = _HERE / "checkpoints" if (_HERE / "checkpoints").is_dir() else _HERE.parent / "checkpoints"
DEMO_CHECKPOINT = _SHIPPED / "demo" / "model.safetensors"
CHECKPOINTS = "checkpoints"  # a run directory's folder of checkpoints
WEIGHTS = "model.safetensors"  # a checkpoint's weights file
_STEP = re.compile(r"^step_(\d{8,})$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt, or holding more than data."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root` (a checkpoints folder), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(Path(run_dir) / CHECKPOINTS)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from itself, its run directory (-> latest) or its checkpoints folder."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    for candidate in (latest_checkpoint(path), (list_checkpoints(path) or [None])[-1]):
        if candidate is not None:
            return candidate
    raise FileNotFoundError(f"no checkpoint found at {path} (expected a step_* directory or a run directory)")


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, metadata) of a `.safetensors` file, a checkpoint directory or a run directory (its latest)."""
    path = Path(path)
    file = path if path.is_file() else resolve_checkpoint(path) / WEIGHTS
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(file)), {"file": file, **meta}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {file} is not a readable safetensors file ({err}); re-download or "
                              "re-export it") from None


@dataclass
class Preprocessing:
    """How a checkpoint's inputs are made and its predictions pruned (see data/resize.py and
    `Gaussians.prune`); recorded with every checkpoint, overridable per run."""

    resample: str = "antialiased"  # resize filter (data/config.py RESAMPLE_FILTERS)
    scene_scale: float = 1.0  # pose normalisation scale
    keep_ratio: float | None = None  # keep rule: this share of all Gaussians (None: no ratio) ...
    random_ratio: float = 0.0  # ... of which this share drawn at random from the less opaque rest
    prune_seed: int = 0  # seed of that draw
    min_opacity: float | None = 0.001  # then drop Gaussians at or below this opacity (None: none)

    def override(self, **changes) -> Preprocessing:
        """A copy with the fields given as non-None values replaced (command-line options)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class LoadedModel:
    model: LongLRM
    source: str  # "ours" or "official"
    path: Path
    resolution: ResolutionConfig = field(default_factory=lambda: ResolutionConfig(mode="full", size=540))
    num_views: int | None = None  # input views the model was trained with
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a trained network with what it was trained on; every failure is a ValueError/FileNotFoundError naming the fix.

    The file's content, not its name, says which kind it is (a renamed file loads all the same), and
    weights that are not all finite are refused: they would only give NaN Gaussians and black renders.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass --checkpoint with a .safetensors file, "
                                "a training run directory or the official Long-LRM .pt file")
    kind = "run directory" if path.is_dir() else file_format(path)
    if kind == "torch":
        try:
            official = load_official_checkpoint(path, device=device)
        except (ValueError, RuntimeError, OSError, EOFError) as err:
            if isinstance(err.__cause__, pickle.UnpicklingError):
                raise ValueError(f"checkpoint {path} holds Python objects besides tensors, and this command loads "
                                 "weights only (it never runs code stored in a file); save the model's state dict "
                                 "alone (torch.save(model.state_dict(), ...)) or convert it to .safetensors") from None
            raise ValueError(f"checkpoint {path} could not be loaded as an official Long-LRM checkpoint: {err}") from None
        loaded = official_model(official, path)
    elif kind is None:
        raise ValueError(f"checkpoint {path} is not a readable safetensors file or PyTorch checkpoint (damaged, "
                         "truncated or another kind of file); re-download or re-export it")
    else:
        loaded = _load_ours(path, device)
    check_finite(loaded.model, loaded.path)
    return loaded


def file_format(path: Path) -> str | None:
    """"safetensors", "torch" (a zip archive as torch.save writes, or its legacy pickle) or None, from the
    first bytes of the file."""
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header itself
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) or head[:1] == b"\x80":  # zip; pickle protocol 2+
        return "torch"
    return None


def check_finite(model: torch.nn.Module, path: Path) -> None:
    """Refuse weights holding NaN or infinity (a training run that diverged, a damaged file)."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"checkpoint {path} has NaN or infinite weights in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); it is damaged or from a training run that diverged: "
                         "use an earlier checkpoint")


def official_model(official: OfficialCheckpoint, path: Path) -> LoadedModel:
    return LoadedModel(official.model.eval(), "official", path, *official_recipe(official.recipe))


def official_recipe(recipe: OfficialRecipe = OFFICIAL_RECIPE) -> tuple[ResolutionConfig, int, Preprocessing]:
    """Resolution, input views and preprocessing of the official file: OpenCV bilinear resize of whole
    frames (960x544 for 16:9), scene_scale 1.35, the official keep rule with a fixed seed and no
    opacity threshold."""
    resolution = ResolutionConfig(mode="full", size=recipe.short_side, multiple=16, resample=recipe.resample)
    preprocessing = Preprocessing(resample=recipe.resample, scene_scale=recipe.scene_scale,
                                  keep_ratio=1.0 - recipe.prune_ratio, random_ratio=recipe.random_ratio,
                                  min_opacity=None)
    return resolution, recipe.num_views, preprocessing


def _load_ours(path: Path, device) -> LoadedModel:
    state, meta = read_weights(path)
    file = meta["file"]
    if "model_config" not in meta:
        raise ValueError(f"checkpoint {file} carries no model config in its metadata, so its architecture is unknown; "
                         "use a checkpoint written by this project's trainer")
    try:
        config = from_dict(ModelConfig, json.loads(meta["model_config"]))
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {file} has a model config this version cannot build: {err}") from None
    model = build_model(config, device="meta")
    try:
        check_state_dict(model.state_dict(), state)
    except ValueError as err:
        raise ValueError(f"{file}: {err}; it does not match the architecture its config describes (corrupt, or "
                         "from another version)") from None
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    train_config = json.loads(meta.get("train_config", "{}") or "{}")
    resolution, num_views, preprocessing = training_recipe(train_config, file)
    if "preprocessing" in meta:  # written by train/export.py
        try:
            preprocessing = Preprocessing(**json.loads(meta["preprocessing"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {file} records preprocessing this version cannot read: {err}") from None
    return LoadedModel(model.to(device).eval(), "ours", file, resolution, num_views, preprocessing)


def training_recipe(train_config: dict, file: Path) -> tuple[ResolutionConfig, int | None, Preprocessing]:
    """Resolution, input views and preprocessing of the training run that wrote a checkpoint.

    Files written before the filter was recorded were trained with the antialiased resize. Stage-3
    runs prune while training: their keep rule applies at inference too (as in the official forward).
    """
    data, prune = train_config.get("data", {}), train_config.get("prune", {})
    r = data.get("resolution", {})
    try:
        resolution = ResolutionConfig(mode=r.get("mode", "full"), size=int(r.get("size", 540)),
                                      multiple=int(r.get("multiple", 16)), resample=r.get("resample", "antialiased"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {file} records a training resolution this version cannot use: {err}") from None
    preprocessing = Preprocessing(resample=resolution.resample, scene_scale=float(data.get("scene_scale", 1.0)))
    if prune.get("enabled"):
        preprocessing = replace(preprocessing, keep_ratio=1.0 - float(prune.get("prune_ratio", 0.6)),
                                random_ratio=float(prune.get("random_ratio", 0.1)))
    return resolution, data.get("views", {}).get("num_inputs"), preprocessing
