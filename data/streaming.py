"""Streaming training dataset over webdataset scene shards (written by data/dl3dv/shards.py).

Pipeline per DataLoader worker:
  shard URLs: the shard list is split by node (`wds.split_by_node`: RANK/WORLD_SIZE from the
      environment or torch.distributed) and then by worker (`wds.split_by_worker`), and each worker
      resamples shards with replacement from its own part (resampled=True: an endless stream, no
      epoch boundary; `with_epoch(epoch_samples)` sets the samples per worker per "epoch"). Parts are
      disjoint, so no two workers on any node read the same shard at the same time. With fewer shards
      than nodes x workers, parts would be empty: every worker then resamples all shards (warned).
  -> tar members grouped into scene samples (`wds.tarfile_to_samples`)
  -> views selected from cameras.json alone; unselected frames' bytes are dropped here, so the
      shuffle buffer holds only the selected, still encoded, frames
  -> `wds.shuffle(shuffle_buffer)` -> decode the selected frames, resize, normalise -> Sample.
A corrupt or truncated sample (malformed cameras.json, missing or undecodable frame, too few frames)
is skipped with a warning and counted in `self.skipped`; tar data that cannot be read at all (a
truncated or damaged shard, whose rest is then lost) is warned about and counted in
`self.read_errors` (webdataset may report one damage twice). Counters are per process: read them in
the main process with num_workers=0, or log them from the workers. Training never stops for either.

Under `accelerate launch` build a plain DataLoader(dataset, batch_size, num_workers,
collate_fn=collate) and do NOT pass it through `accelerator.prepare`: a prepared iterable loader is
read on rank 0 and dispatched, which defeats the per-node split. Create the dataset after the
Accelerator (or set RANK/WORLD_SIZE, which `accelerate launch` does) so each rank knows its part.
"""

from __future__ import annotations

import glob
import random
import warnings
from pathlib import Path

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset

from .config import DataConfig
from .dl3dv.shards import scene_from_sample
from .errors import SceneError
from .pipeline import SampleBuilder
from .view_sampling import Selection

_SAMPLE_ERRORS = (SceneError, ValueError, KeyError, OSError, EOFError)


def shard_urls(source: str | Path | list) -> list[str]:
    """Shard paths from a list, a glob pattern, webdataset brace notation, or a folder of .tar files."""
    if isinstance(source, (list, tuple)):
        urls = [str(u) for u in source]
    elif Path(source).is_dir():
        urls = sorted(str(p) for p in Path(source).glob("*.tar"))
    elif "{" in str(source):
        urls = list(wds.shardlists.expand_urls(str(source)))
    else:
        urls = sorted(glob.glob(str(source))) or [str(source)]
    if not urls:
        raise ValueError(f"no shards found in {source}")
    return urls


class ShardDataset(IterableDataset):
    def __init__(self, shards: str | Path | list, config: DataConfig, mode: str = "train", seed: int = 0,
                 shuffle_buffer: int = 8, epoch_samples: int | None = None, resampled: bool = True):
        """epoch_samples: samples per worker per iteration (`with_epoch`); None = endless when resampled.
        resampled=False reads this worker's shards once, in order (evaluation)."""
        self.urls = shard_urls(shards)
        self.config = config
        self.builder = SampleBuilder(config, mode)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.epoch_samples = epoch_samples
        self.resampled = resampled
        self.epoch = 0
        self.skipped = 0  # samples dropped
        self.read_errors = 0  # unreadable tar data

    def set_epoch(self, epoch: int) -> None:
        """Reseed shard and view draws (takes effect in workers created after the call)."""
        self.epoch = epoch

    def worker_shards(self) -> list[str]:
        """This process's part of the shard list (node split, then worker split)."""
        return list(wds.split_by_worker(wds.split_by_node([dict(url=u) for u in self.urls])))

    def _urls(self, rng: random.Random):
        part = [d["url"] for d in self.worker_shards()]
        if not part:
            if not self.resampled:
                return
            warnings.warn(f"{len(self.urls)} shards are fewer than nodes x workers: every worker samples all shards; "
                          "write smaller shards for disjoint parts", stacklevel=2)
            part = self.urls
        if not self.resampled:
            yield from (dict(url=u) for u in part)
            return
        while True:
            yield dict(url=rng.choice(part))

    def _skip(self, what: str, error: Exception) -> None:
        self.skipped += 1
        warnings.warn(f"skipping {what}: {error}", stacklevel=2)

    def _tar_handler(self, error: Exception) -> bool:
        self.read_errors += 1
        warnings.warn(f"skipping unreadable shard data: {error.args[0] if error.args else error}", stacklevel=2)
        return True  # continue with the next member / shard

    def _select(self, samples, rng: np.random.Generator):
        for sample in samples:
            try:
                scene = scene_from_sample(sample, self.config.distortion)
                selection = self.builder.select(scene, rng)
            except _SAMPLE_ERRORS as e:
                self._skip(f"sample {sample.get('__key__')}", e)
                continue
            frames = list(dict.fromkeys(selection.inputs + selection.targets))
            pos = {f: i for i, f in enumerate(frames)}
            local = Selection([pos[f] for f in selection.inputs], [pos[f] for f in selection.targets])
            yield scene.subset(frames), local, selection  # only the kept frames' bytes live on

    def _build(self, items, rng: np.random.Generator):
        for scene, local, selection in items:
            try:
                sample = self.builder.build(scene, local, rng)
            except _SAMPLE_ERRORS as e:
                self._skip(f"scene {scene.scene_id}", e)
                continue
            sample.input_indices = sample.input_indices.new_tensor(selection.inputs)
            sample.target_indices = sample.target_indices.new_tensor(selection.targets)
            yield sample

    def __iter__(self):
        rank, world_size, worker, num_workers = wds.utils.pytorch_worker_info()
        seed = [self.seed, self.epoch, rank, worker]
        shard_rng = random.Random("/".join(map(str, seed)))
        view_rng = np.random.default_rng(seed)
        pipeline = wds.DataPipeline(
            lambda: self._urls(shard_rng),
            wds.tarfile_to_samples(handler=self._tar_handler),
            lambda samples: self._select(samples, view_rng),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(shard_rng.random())),
            lambda items: self._build(items, view_rng),
        )
        if self.epoch_samples is not None:
            pipeline = pipeline.with_epoch(self.epoch_samples)
        return iter(pipeline)
