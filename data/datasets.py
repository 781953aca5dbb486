"""Map-style datasets: scene folders on local disk, and procedural scenes generated on the fly.

Both return one `Sample` per index (use `collate` as the DataLoader's collate_fn). The views of
index i are drawn from np.random.default_rng([seed, epoch, i]), so a run is reproducible whatever
the worker count; call `set_epoch(e)` to draw new views each epoch (as with DistributedSampler).
Sharding across processes is the sampler's job here (e.g. `accelerator.prepare(DataLoader(...))`
or DistributedSampler); the streaming dataset in data/streaming.py splits shards by itself.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .batch import Sample
from .config import DataConfig
from .errors import SceneError
from .open_scene import find_scenes, open_scene
from .pipeline import SampleBuilder
from .scene import Scene

ERROR_POLICIES = ("raise", "skip")


def scene_paths(source: str | Path | list) -> list[Path]:
    """Scene folders from a list, a text file with one path per line (relative to the file), or a root folder."""
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
    source = Path(source)
    if source.is_file() and source.suffix == ".txt":
        lines = [line.strip() for line in source.read_text().splitlines()]
        return [(source.parent / line) for line in lines if line and not line.startswith("#")]
    if not source.exists():
        raise FileNotFoundError(f"scene source {source} does not exist")
    return find_scenes(source)


class SceneFolderDataset(Dataset):
    """One sample per scene folder (any layout `open_scene` reads).

    on_error: "raise" stops on an unusable scene; "skip" warns, counts it in `self.skipped` (per
    process) and returns the next scene's sample instead.
    """

    def __init__(self, scenes: str | Path | list, config: DataConfig, mode: str = "train", seed: int = 0,
                 on_error: str = "raise"):
        if on_error not in ERROR_POLICIES:
            raise ValueError(f"on_error must be one of {ERROR_POLICIES}, got {on_error!r}")
        self.paths = scene_paths(scenes)
        if not self.paths:
            raise ValueError(f"no scenes found in {scenes}")
        self.config = config
        self.builder = SampleBuilder(config, mode)
        self.seed = seed
        self.on_error = on_error
        self.epoch = 0
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def open(self, index: int) -> Scene:
        return open_scene(self.paths[index], image_dir=self.config.image_dir, distortion=self.config.distortion)

    def __getitem__(self, index: int) -> Sample:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return self.builder(self.open(i), np.random.default_rng([self.seed, self.epoch, i]))
            except SceneError as e:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                warnings.warn(f"skipping scene {self.paths[i]}: {e}", stacklevel=2)
        raise SceneError(f"none of the {len(self)} scenes could be used; see the warnings above")


class ProceduralDataset(Dataset):
    """`length` procedural scenes; scene i uses seed `procedural.seed + i` (deterministic per index).

    Rendering a scene costs seconds on a CPU, so the last `cache_scenes` scenes are kept per process.
    """

    def __init__(self, length: int, config: DataConfig, procedural=None, mode: str = "train", seed: int = 0,
                 cache_scenes: int = 4):
        from .procedural import ProceduralConfig

        self.length = length
        self.procedural = procedural if procedural is not None else ProceduralConfig.preset("small")
        self.builder = SampleBuilder(config, mode)
        self.seed = seed
        self.epoch = 0
        self.cache_scenes = cache_scenes
        self._cache: OrderedDict[int, Scene] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def scene(self, index: int) -> Scene:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        from .procedural import generate_scene

        config = self.procedural.replace(seed=self.procedural.seed + index)
        ps = generate_scene(config)
        scene = Scene.from_arrays(f"procedural_{config.path}_{config.seed}", ps.images, ps.intrinsics, ps.c2w)
        if self.cache_scenes > 0:
            self._cache[index] = scene
            while len(self._cache) > self.cache_scenes:
                self._cache.popitem(last=False)
        return scene

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} procedural scenes")
        return self.builder(self.scene(index), np.random.default_rng([self.seed, self.epoch, index]))
