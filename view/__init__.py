"""Look at a reconstruction in the browser (`python -m view PATH`) and export it for web splat viewers
(`python -m view.export PLY`)."""

from .server import DEFAULT_MAX_GAUSSIANS, Viewer, check_port, parse_address, serve

__all__ = ["DEFAULT_MAX_GAUSSIANS", "Viewer", "check_port", "parse_address", "serve"]
