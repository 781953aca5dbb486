"""Look at a reconstruction in the browser (`python -m view PATH`) and export it for web splat viewers
(`python -m view.export PLY`)."""

from model.lazy_exports import export_lazily

export_lazily(__name__, {name: "view.server" for name in
                         ("DEFAULT_MAX_GAUSSIANS", "Viewer", "check_port", "parse_address", "serve")})
