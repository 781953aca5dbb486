"""Package-level names imported on first use, so importing one light submodule (`model.cameras`,
`data.config`, `inference.cli`) does not load the network, torch's heavy parts or the whole pipeline.

`export_lazily(__name__, {"name": "package.module", ...})` at the end of a package's __init__. A name may
also be the name of the module it lives in (`data.open_scene`, `inference.reconstruct`): importing that
module would bind the module over the exported function on the package, so such bindings are refused.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType


def export_lazily(package: str, exports: dict[str, str]) -> None:
    """Make each name of `exports` an attribute of `package`, read from its module on first use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(exports[name]), name)

    class Package(ModuleType):
        def __setattr__(self, name: str, value) -> None:
            if name not in exports or not isinstance(value, ModuleType):  # the import system binding a submodule
                super().__setattr__(name, value)

    module = sys.modules[package]
    module.__getattr__ = __getattr__
    module.__all__ = sorted(exports)
    module.__class__ = Package
