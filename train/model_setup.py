"""The network a run trains: a named preset plus field overrides -> ModelConfig -> model."""

from __future__ import annotations

from typing import Any

from torch import nn

from model.build import build_model
from model.config import ModelConfig, preset
from model.typed_config import from_dict, to_dict
from train.config import ModelSection


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_config(section: ModelSection) -> ModelConfig:
    """The preset with `overrides` applied; nested sections (e.g. `mamba: {d_state: 8}`) merge field by field."""
    return from_dict(ModelConfig, _deep_merge(to_dict(preset(section.preset)), section.overrides))


def build_from_section(section: ModelSection) -> tuple[ModelConfig, nn.Module]:
    config = model_config(section)
    return config, build_model(config)
