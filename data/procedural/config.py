"""Settings of one procedural scene: image size, number of frames, camera path, objects, seed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PATH_KINDS = ("walk", "forward", "orbit")
# Memory of generate_scene + write_dl3dv_scene, measured as peak RSS minus the interpreter's ~250 MB
# (`/usr/bin/time -f %M python -m data.procedural --frames F --width W --height H`, F x W x H from
# 4 x 512 x 512 to 2 x 2048 x 1024): every frame's colour, depth and PNG buffers, plus the rays in flight.
BYTES_PER_FRAME_PIXEL = 40
BYTES_PER_RAY = 512


@dataclass(frozen=True)
class ProceduralConfig:
    num_frames: int = 120
    width: int = 256
    height: int = 144
    path: str = "walk"  # one of PATH_KINDS
    num_objects: int | None = None  # None: drawn from [4, 10] per seed
    fov_x_deg: float | None = None  # horizontal field of view; None: drawn from [60, 70] per seed
    seed: int = 0
    clearance: float = 0.4  # metres kept free around every camera (walls and objects)
    shadows: bool = True  # objects cast shadows from the key light
    chunk_rays: int = 1 << 18  # rays traced at once (whole views, at least one); bounds memory, BYTES_PER_RAY a ray
    # torch threads while rendering (restored afterwards); None keeps the caller's setting. One thread is
    # the default because the work is many mid-sized elementwise ops: a second thread gains little on an
    # idle machine and, when other processes keep the cores busy, makes every op wait for it.
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("num_frames", "width", "height", "chunk_rays"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.path not in PATH_KINDS:
            raise ValueError(f"unknown camera path kind {self.path!r}; expected one of {list(PATH_KINDS)}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads <= 0):
            raise ValueError(f"num_threads must be a positive integer or None, got {self.num_threads!r}")
        if self.num_objects is not None and (not isinstance(self.num_objects, int) or self.num_objects < 0):
            raise ValueError(f"num_objects must be a non-negative integer or None, got {self.num_objects!r}")
        if self.fov_x_deg is not None and not 1.0 <= self.fov_x_deg <= 170.0:
            raise ValueError(f"fov_x_deg must lie in [1, 170] degrees, got {self.fov_x_deg!r}")
        if not 0.05 <= self.clearance <= 1.0:
            raise ValueError(f"clearance must lie in [0.05, 1.0] metres, got {self.clearance!r}")

    def memory_bytes(self) -> int:
        """About how much memory rendering and writing this scene takes (all frames stay in memory)."""
        pixels = self.width * self.height
        return self.num_frames * pixels * BYTES_PER_FRAME_PIXEL + max(pixels, self.chunk_rays) * BYTES_PER_RAY

    def max_pixels(self, available: int) -> int:
        """The most pixels per frame whose `memory_bytes` stays within `available` at this frame count."""
        per_frame = self.num_frames * BYTES_PER_FRAME_PIXEL
        beyond_chunk = available // (per_frame + BYTES_PER_RAY)  # views larger than chunk_rays: one per batch
        if beyond_chunk >= self.chunk_rays:
            return beyond_chunk
        return max(0, min(self.chunk_rays, (available - self.chunk_rays * BYTES_PER_RAY) // per_frame))

    def replace(self, **changes) -> ProceduralConfig:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def preset(name: str, **changes) -> ProceduralConfig:
        """A named preset with optional field changes, e.g. `preset("tiny", seed=3)`."""
        if name not in PRESETS:
            raise ValueError(f"unknown procedural preset {name!r}; expected one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **changes)


PRESETS = {
    # Unit tests: a few small frames.
    "tiny": ProceduralConfig(num_frames=24, width=64, height=36),
    # CPU training and demos.
    "small": ProceduralConfig(num_frames=120, width=256, height=144),
    # The DL3DV images_4 resolution (multiple of 16 in height) and a full-length video.
    "dl3dv": ProceduralConfig(num_frames=300, width=960, height=544),
}
