"""Training and evaluation data for the trainer, from the three sources: synthetic, folders, shards.

Map-style sources (synthetic, folders) use `ResumableSampler`, which shards by rank itself and resumes
at the exact sample position; their loaders are therefore NOT passed through `accelerator.prepare`
(which would shard a second time and restart the stream on resume). The webdataset source splits
shards by node and worker inside the dataset and must never go through `accelerator.prepare` either:
a prepared iterable loader is read on rank 0 and dispatched, which defeats the per-node split. It
resumes by reseeding its stream with the resume step (a fresh, not an identical, continuation).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader, Dataset, Subset

from data.batch import collate
from data.datasets import ProceduralDataset, SceneFolderDataset, scene_paths
from data.procedural import ProceduralConfig
from data.streaming import ShardDataset, shard_urls
from train.config import TrainDataConfig
from train.sampler import EpochIndexed, ResumableSampler


def scene_folders(entries: tuple[str, ...], key: str = "data.paths") -> list[Path]:
    """Scene folders from entries that are each a scene folder, a root folder or a .txt list.

    An entry that does not exist, or under which no scene is found, is an error naming it.
    """
    folders = []
    for entry in entries:
        if not Path(entry).exists():
            raise FileNotFoundError(f"{key} entry {entry} does not exist; fix the path")
        found = scene_paths(entry)
        if not found:
            raise ValueError(f"{key} entry {entry} holds no scene (a folder with transforms.json, "
                             "opencv_cameras.json or a COLMAP model, at most two levels down); fix the path")
        folders += found
    return folders


def shard_files(entries: tuple[str, ...]) -> list[str]:
    """Shard files from entries that are each a file, a folder of .tar files, a glob or a brace pattern."""
    urls = []
    for entry in entries:
        try:
            found = shard_urls(entry)
        except ValueError:
            found = []
        local = [u for u in found if "://" not in u and not u.startswith("pipe:")]
        if not found or any(not Path(u).is_file() for u in local):
            raise FileNotFoundError(f"data.paths entry {entry} matches no shard file; point it at shard-*.tar files "
                                    "written by `python -m data.dl3dv.convert`, their folder or a pattern")
        urls += found
    return urls


def _procedural(config: TrainDataConfig, seed: int) -> ProceduralConfig:
    s = config.synthetic
    return ProceduralConfig(num_frames=s.frames, width=s.width, height=s.height, path=s.path, seed=seed)


def train_loader(config: TrainDataConfig, batch_size: int, seed: int, rank: int, world_size: int,
                 position: int, resume_step: int) -> DataLoader:
    """An endless loader of `Batch`es for this process.

    position: samples this process has already consumed (map-style sources resume exactly there).
    resume_step: the optimizer step training resumes at (reseeds the shard stream).
    """
    workers = config.num_workers
    if config.source == "shards":
        dataset = ShardDataset(shard_files(config.paths), config, mode="train", seed=seed,
                               shuffle_buffer=config.shuffle_buffer)
        dataset.set_epoch(resume_step)
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                          persistent_workers=workers > 0)
    if config.source == "synthetic":
        # Every scene stays cached: a procedural scene takes about a second to render on a CPU.
        s = config.synthetic
        dataset = ProceduralDataset(s.scenes, config, _procedural(config, 0), mode="train", seed=seed,
                                    cache_scenes=s.scenes)
    else:
        dataset = SceneFolderDataset(scene_folders(config.paths), config, mode="train", seed=seed,
                                     on_error=config.on_error)
    sampler = ResumableSampler(len(dataset), rank, world_size, seed=seed, start=position)
    return DataLoader(EpochIndexed(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, persistent_workers=workers > 0)


def eval_dataset(config: TrainDataConfig, num_scenes: int) -> Dataset | None:
    """Held-out scenes with the evaluation protocol (KMeans inputs, every n-th frame as target)."""
    if config.source == "synthetic":
        s = config.synthetic
        return ProceduralDataset(num_scenes, config, _procedural(config, s.eval_seed), mode="eval",
                                 cache_scenes=num_scenes)
    if not config.eval_paths:
        return None
    dataset = SceneFolderDataset(scene_folders(config.eval_paths, "data.eval_paths"), config, mode="eval",
                                 on_error=config.on_error)
    return Subset(dataset, range(min(num_scenes, len(dataset))))

