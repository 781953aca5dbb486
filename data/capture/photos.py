"""A folder of photos without poses: listed in natural name order, upright (EXIF orientation applied).

Only the folder's own files count (no subfolders, no hidden files). All photos must come out the
same size once upright: one scene is one camera, so a mix of sizes or of portrait and landscape
is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import SceneError
from ..files import natural_key

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 swap width and height
_PIL_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_photos(folder: Path) -> list[Path]:
    """The photos directly inside `folder`, in natural name order."""
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in PHOTO_SUFFIXES), key=lambda p: natural_key(p.name))


class Photos:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.paths = list_photos(self.folder)
        if len(self.paths) < 2:
            found = f"only {self.paths[0].name}" if self.paths else "none"
            raise SceneError(f"{self.folder} needs at least 2 photos to compute camera poses, found {found} "
                             f"({', '.join(PHOTO_SUFFIXES)}); take 20 or more overlapping photos of the scene")
        stems: dict[str, str] = {}
        for p in self.paths:
            if p.stem in stems:
                raise SceneError(f"photos {stems[p.stem]} and {p.name} in {self.folder} share the name {p.stem!r}; "
                                 "rename or remove one")
            stems[p.stem] = p.name
        sizes: dict[tuple[int, int], list[str]] = {}
        for p in self.paths:
            sizes.setdefault(self._upright_size(p), []).append(p.name)
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h} ({len(v)} photos, e.g. {v[0]})" for (w, h), v in sizes.items())
            raise SceneError(f"the photos in {self.folder} have different sizes once upright: {shown}; use photos "
                             "from one camera at one zoom and orientation, or resize them to one size")
        self.width, self.height = next(iter(sizes))

    def __len__(self) -> int:
        return len(self.paths)

    @staticmethod
    def _upright_size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as img:
                w, h = img.size
                return (h, w) if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)
        except _PIL_ERRORS as e:
            raise SceneError(f"photo {path} is not a readable image ({e}); remove it or re-export it") from None

    def frame(self, index: int, size: tuple[int, int], grey: bool = False) -> np.ndarray:
        """Photo `index` upright, scaled to size (width, height): uint8 [H, W, 3], or [H, W] when grey."""
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                if img.mode.startswith("I"):  # 16-bit grey: keep the high byte rather than clip
                    img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
                img = img.convert("L" if grey else "RGB")
                if img.size != size:
                    img = img.resize(size, Image.Resampling.LANCZOS)
                return np.asarray(img)
        except _PIL_ERRORS as e:
            raise SceneError(f"photo {path} cannot be decoded ({e}); remove it or re-export it") from None

    def frames(self, size: tuple[int, int], grey: bool = False) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.frame(i, size, grey)
