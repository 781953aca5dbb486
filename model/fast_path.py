"""Logging of fast-path decisions: each backend choice (kernel or PyTorch twin) is reported once.

Every module that picks between a CUDA kernel and its PyTorch twin states the choice through here,
so a run's log says exactly which implementations ran, without repeating it on every call.
"""

from __future__ import annotations

import logging

import torch

_reported: set[tuple[str, str]] = set()


def log_choice(logger_name: str, message: str, level: int = logging.INFO) -> None:
    """Log `message` on logger `logger_name` the first time this pair is seen (WARNING for a slow
    fallback the user can fix, INFO otherwise)."""
    key = (logger_name, message)
    if key not in _reported:
        _reported.add(key)
        logging.getLogger(logger_name).log(level, message)


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device, None for any other device.

    Kernel eligibility rules take the capability as an argument so they can be checked on machines
    without a GPU; this is where the real one comes from.
    """
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_capability(device)
