"""The typed training configuration: one dataclass per concern, all in one `TrainConfig`.

Values come from the dataclass defaults, then a YAML file (train/configs/*.yaml), then command-line
`key.sub=value` overrides (see model.typed_config), each checked against the field's type as it is
set and against the ranges below when the config is built. Every stage uses the same schema; a
stage's settings are defined once, in its YAML file (`stage_config` reads one by name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.config import DataConfig
from model.losses import LossConfig
from model.typed_config import load_config

DATA_SOURCES = ("synthetic", "folders", "shards")
MIXED_PRECISION = ("fp32", "bf16")
ON_ERROR = ("skip", "raise")
CONFIGS = Path(__file__).resolve().parent / "configs"  # stage1.yaml, stage2.yaml, stage3.yaml, finetune16.yaml, ...


@dataclass
class SyntheticConfig:
    """Procedural scenes rendered on the fly (data source "synthetic"): smoke runs and CPU training."""

    frames: int = 24  # frames per procedural video
    width: int = 96  # rendered size, before the data pipeline's crop and resize
    height: int = 64
    path: str = "walk"  # camera path kind (data.procedural.PATH_KINDS)
    scenes: int = 64  # distinct training scenes (seeds 0 .. scenes-1), reused every epoch with new views
    eval_seed: int = 1_000_000  # held-out scenes use seeds eval_seed, eval_seed + 1, ...

    def __post_init__(self) -> None:
        if min(self.frames, self.width, self.height, self.scenes) < 1:
            raise ValueError(f"data.synthetic.frames, width, height and scenes must be >= 1, got {self.frames}, "
                             f"{self.width}, {self.height}, {self.scenes}")


@dataclass
class TrainDataConfig(DataConfig):
    """The data pipeline's settings (views, resolution, scene scale, ...) plus where scenes come from."""

    source: str = "synthetic"  # one of DATA_SOURCES
    # folders: scene folders, root folders or .txt lists; shards: shard files, folders of them, glob or
    # brace patterns. Checked before training starts (train.trainer.check_data).
    paths: tuple[str, ...] = ()
    eval_paths: tuple[str, ...] = ()  # held-out scene folders (any source); synthetic: held-out seeds instead
    num_workers: int = 2
    on_error: str = "skip"  # folders: an unusable scene is skipped with a warning ("raise" to stop)
    shuffle_buffer: int = 8  # shards: samples shuffled in each worker
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {list(DATA_SOURCES)}, got {self.source!r}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"data.on_error must be one of {list(ON_ERROR)}, got {self.on_error!r}")
        if self.num_workers < 0 or self.shuffle_buffer < 1:
            raise ValueError(f"need data.num_workers >= 0 and data.shuffle_buffer >= 1, got {self.num_workers} "
                             f"and {self.shuffle_buffer}")


@dataclass
class ModelSection:
    preset: str = "tiny"  # a key of model.config.PRESETS
    overrides: dict = field(default_factory=dict)  # ModelConfig fields changed from the preset


@dataclass
class OptimConfig:
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 2000
    steps: int = 60_000  # optimizer steps (skipped ones included): the schedule's length
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    batch_size: int = 1  # scenes per device per micro-batch
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    global_batch_size: int | None = None  # if set: checked against batch_size x processes x accumulation
    grad_clip: float = 1.0
    skip_grad_norm: float = 50.0  # steps whose (pre-clip) gradient norm exceeds this, or is not finite, are skipped

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"need 0 <= optim.warmup_steps < optim.steps, got {self.warmup_steps} and {self.steps}")
        if self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("optim.batch_size and optim.grad_accum_steps must be >= 1")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ValueError(f"optim.global_batch_size must be >= 1 (or null), got {self.global_batch_size}")
        if not (self.lr > 0 and self.eps > 0 and self.grad_clip > 0 and self.skip_grad_norm > 0):
            raise ValueError("optim.lr, optim.eps, optim.grad_clip and optim.skip_grad_norm must be positive numbers")
        if not all(0.0 <= b < 1.0 for b in self.betas) or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need optim.betas in [0, 1), optim.weight_decay >= 0 and optim.min_lr_ratio in [0, 1], "
                             f"got {list(self.betas)}, {self.weight_decay} and {self.min_lr_ratio}")


@dataclass
class PruneConfig:
    """Training-time pruning (stage 3): keep the top (1-prune_ratio)(1-random_ratio) of the Gaussians
    by opacity plus a random (1-prune_ratio) random_ratio of the rest: 36% + 4% with the defaults."""

    enabled: bool = False
    prune_ratio: float = 0.6
    random_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not (0.0 <= self.prune_ratio < 1.0 and 0.0 <= self.random_ratio <= 1.0):
            raise ValueError("prune.prune_ratio must lie in [0, 1) and prune.random_ratio in [0, 1]")


@dataclass
class RenderConfig:
    checkpoint_views: bool = True  # recompute each target view's render in backward instead of storing it
    near: float = 0.01
    far: float = 1e6
    backend: str = "auto"  # model.render backend


@dataclass
class CheckpointConfig:
    save_every: int = 1000  # steps between checkpoints; 0: only the final one
    keep_last: int = 3  # newest checkpoints kept; 0 keeps all
    init_from: str | None = None  # weights of a previous stage: checkpoint dir, run dir (latest) or .safetensors

    def __post_init__(self) -> None:
        if self.save_every < 0 or self.keep_last < 0:
            raise ValueError(f"checkpoint.save_every and checkpoint.keep_last must be >= 0 (0: only the final "
                             f"checkpoint / keep all), got {self.save_every} and {self.keep_last}")


@dataclass
class LogConfig:
    every: int = 10  # steps between scalar logs; 0: only the last step
    tensorboard: bool = True
    wandb: bool = False  # needs `pip install wandb`; never required
    wandb_project: str = "longlrm"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"log.every must be >= 0 (0: only the last step), got {self.every}")


@dataclass
class EvalConfig:
    every: int = 1000  # steps between evaluations; 0 disables periodic evaluation
    num_scenes: int = 4  # held-out scenes per evaluation
    lpips: bool = True  # LPIPS-VGG (skipped with a note if its weights are not installed)
    save_images: bool = True  # PNG grids of target / render per scene

    def __post_init__(self) -> None:
        if self.every < 0 or self.num_scenes < 0:
            raise ValueError(f"eval.every and eval.num_scenes must be >= 0, got {self.every} and {self.num_scenes}")


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    mixed_precision: str = "bf16"  # "bf16" (autocast) or "fp32"; rendering always runs in fp32
    tf32: bool = True  # CUDA matmuls in TF32
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}")


def stage_config(name: str, overrides: list[str] = ()) -> TrainConfig:
    """The settings of a named stage (`stage1`, `stage2`, `stage3`, `finetune16`, ...): its YAML file."""
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        raise ValueError(f"unknown training stage {name!r}; expected one of {known}")
    return load_config(TrainConfig, path, overrides)
