"""`--export FORMATS` and `--view [[HOST:]PORT]` of the commands that write a reconstruction
(infer.py, python -m refine): parsed and checked before any work, so a port in use fails at once
rather than after the run."""

from __future__ import annotations

from .export import parse_formats
from .server import check_port, parse_address


def viewing_options(export: str | None, view: str | None) -> tuple[list[str], tuple[str, int] | None]:
    """(export formats, (host, port) to serve on or None) from the two options' values."""
    formats = parse_formats(export) if export else []
    address = parse_address(view) if view else None
    if address:
        check_port(*address, option="--view")
    return formats, address
