"""Build a LongLRM from a preset name or a ModelConfig."""

from __future__ import annotations

import contextlib

import torch

from model.config import PRESETS, ModelConfig, preset
from model.longlrm import LongLRM


def build_model(preset_or_config: str | ModelConfig, device: str | torch.device | None = None) -> LongLRM:
    """`build_model("paper")`, `build_model("small")`, `build_model("tiny")` or `build_model(ModelConfig(...))`.

    device="meta" builds the structure without allocating or initialising weights (e.g. to count
    parameters or to load a checkpoint with `load_state_dict(..., assign=True)`).
    """
    if isinstance(preset_or_config, str):
        config = preset(preset_or_config)
    elif isinstance(preset_or_config, ModelConfig):
        config = preset_or_config
    else:
        raise TypeError(f"expected a preset name ({sorted(PRESETS)}) or a ModelConfig, "
                        f"got {type(preset_or_config).__name__}")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return LongLRM(config)

