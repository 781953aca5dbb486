"""The network a run trains: a named preset plus field overrides -> ModelConfig -> model."""

from __future__ import annotations

from torch import nn

from model.build import build_model
from model.config import ModelConfig, preset
from model.typed_config import from_dict
from train.config import ModelSection


def model_config(section: ModelSection) -> ModelConfig:
    """The preset with `overrides` applied; nested sections (e.g. `mamba: {d_state: 8}`) merge field by field."""
    return from_dict(ModelConfig, section.overrides, where="model.overrides", base=preset(section.preset))


def build_from_section(section: ModelSection) -> tuple[ModelConfig, nn.Module]:
    config = model_config(section)
    return config, build_model(config)
