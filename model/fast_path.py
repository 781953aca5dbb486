"""Logging of fast-path decisions: each backend choice (kernel or PyTorch twin) is reported once.

Every module that picks between a CUDA kernel and its PyTorch twin states the choice through here,
so a run's log says exactly which implementations ran, without repeating it on every call.
"""

from __future__ import annotations

import logging

_reported: set[tuple[str, str]] = set()


def log_choice(logger_name: str, message: str) -> None:
    """Log `message` at INFO on logger `logger_name` the first time this pair is seen."""
    key = (logger_name, message)
    if key not in _reported:
        _reported.add(key)
        logging.getLogger(logger_name).info(message)
