"""Small helpers shared by the readers: JSON with clear errors, natural frame order."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import SceneError


def load_json(path: Path) -> dict:
    """Parse a camera file, turning a missing or malformed file into a one-line SceneError."""
    if not path.is_file():
        raise SceneError(f"camera file {path} does not exist; point to a scene folder that contains it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SceneError(f"camera file {path} is not valid JSON ({e}); re-export or re-download it") from None
    if not isinstance(data, dict):
        raise SceneError(f"camera file {path} must hold a JSON object at the top level")
    return data


def require(mapping: dict, key: str, where: str):
    """mapping[key], or a SceneError naming the missing key and the file."""
    if key not in mapping:
        raise SceneError(f"{where} is missing the key {key!r}; it does not look like the expected camera format")
    return mapping[key]


def natural_key(name: str) -> list:
    """Sort key that orders frame9 before frame10 (video order for unpadded frame numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
