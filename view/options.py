"""`--export FORMATS` and `--view [[HOST:]PORT]` of the commands that write a reconstruction
(infer.py, python -m refine): parsed and checked before any work, so a port in use fails at once
rather than after the run."""

from __future__ import annotations

import argparse



def add_viewing_options(p: argparse.ArgumentParser, stem: str) -> None:
    """The two options, for a command writing its Gaussians to `stem`.ply."""
    p.add_argument("--export", metavar="FORMATS", help=f"also write the Gaussians for web viewers: splat "
                   f"({stem}.splat), compressed-ply ({stem}.compressed.ply), comma-separated")
    p.add_argument("--view", nargs="?", const="127.0.0.1:8080", metavar="[HOST:]PORT", help="then show the "
                   "result in the browser until Ctrl+C (python -m view; default 127.0.0.1:8080)")


def viewing_options(export: str | None, view: str | None) -> tuple[list[str], tuple[str, int] | None]:
    """(export formats, (host, port) to serve on or None) from the two options' values."""
    from .export import parse_formats
    from .server import check_port, parse_address

    formats = parse_formats(export) if export else []
    address = parse_address(view) if view else None
    if address:
        check_port(*address, option="--view")
    return formats, address
