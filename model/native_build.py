"""Just-in-time build and loading of the C++ operator libraries in csrc/ (the CPU rasterizer, the SSD kernels).

A build is keyed by a hash of its sources, compiler flags, torch and Python versions, and cached under
torch's extension directory (`$TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions), so it
happens once per machine and source change. Concurrent first uses (e.g. parallel test workers)
are serialised by torch's build lock.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
# A wheel ships the sources inside this package (setup.py); a source checkout keeps them at its top level.
CSRC = _HERE / "csrc" if (_HERE / "csrc").is_dir() else _HERE.parent / "csrc"


def _build_name(namespace: str, files: tuple[str, ...], flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode())
        digest.update((CSRC / name).read_bytes())
    digest.update(" ".join(flags).encode())
    digest.update(f"{torch.__version__} py{sys.version_info[0]}.{sys.version_info[1]}".encode())
    return f"{namespace}_{digest.hexdigest()[:12]}"


def load_library(namespace: str, sources: tuple[str, ...], headers: tuple[str, ...], cflags: tuple[str, ...],
                 ldflags: tuple[str, ...], what: str):
    """Compile (first use only) and load the csrc/ files registering `torch.ops.<namespace>`; returns it.

    `what` names the library in messages ("the CPU rasterizer").
    """
    from torch.utils.cpp_extension import get_default_build_root, load

    missing = [n for n in sources + headers if not (CSRC / n).is_file()]
    if missing:
        raise RuntimeError(
            f"the sources of {what} are missing from {CSRC} ({', '.join(missing)}); "
            "reinstall the project (pip install .) or use a full source checkout"
        )
    name = _build_name(namespace, sources + headers, cflags + ldflags)
    build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    library = build_dir / f"{name}.so"
    # torch holds build_dir/lock while a build (maybe in another process) is writing the library.
    if library.is_file() and not (build_dir / "lock").exists():
        torch.ops.load_library(str(library))
        return getattr(torch.ops, namespace)
    if not library.is_file():
        print(f"compiling {what} (first use only)...", file=sys.stderr, flush=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    load(
        name=name,
        sources=[str(CSRC / n) for n in sources],
        extra_cflags=list(cflags),
        extra_ldflags=list(ldflags),
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )
    return getattr(torch.ops, namespace)
