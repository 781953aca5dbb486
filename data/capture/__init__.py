"""Capture: photos or a video without poses -> frames -> poses with pycolmap -> a COLMAP scene."""

from .capture import CAPTURE_KINDS, Capture, capture_kind, capture_scene
from .config import CaptureConfig

__all__ = ["CAPTURE_KINDS", "Capture", "CaptureConfig", "capture_kind", "capture_scene"]
