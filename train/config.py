"""The typed training configuration: one dataclass per concern, all in one `TrainConfig`.

Values come from the dataclass defaults, then a YAML file (train/configs/*.yaml), then command-line
`key.sub=value` overrides (see model.typed_config). Every stage uses the same schema; the stages
differ only in their YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data.config import DataConfig
from model.losses import LossConfig

DATA_SOURCES = ("synthetic", "folders", "shards")
MIXED_PRECISION = ("fp32", "bf16")


@dataclass
class SyntheticConfig:
    """Procedural scenes rendered on the fly (data source "synthetic"): smoke runs and CPU training."""

    frames: int = 24  # frames per procedural video
    width: int = 96  # rendered size, before the data pipeline's crop and resize
    height: int = 64
    path: str = "walk"  # camera path kind (data.procedural.PATH_KINDS)
    scenes: int = 64  # distinct training scenes (seeds 0 .. scenes-1), reused every epoch with new views
    eval_seed: int = 1_000_000  # held-out scenes use seeds eval_seed, eval_seed + 1, ...


@dataclass
class TrainDataConfig(DataConfig):
    """The data pipeline's settings (views, resolution, scene scale, ...) plus where scenes come from."""

    source: str = "synthetic"  # one of DATA_SOURCES
    paths: tuple = ()  # folders: scene folders, root folders or .txt lists; shards: shard files / patterns
    eval_paths: tuple = ()  # held-out scene folders (any source); synthetic: held-out procedural seeds instead
    num_workers: int = 2
    on_error: str = "skip"  # folders: an unusable scene is skipped with a warning ("raise" to stop)
    shuffle_buffer: int = 8  # shards: samples shuffled in each worker
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {list(DATA_SOURCES)}, got {self.source!r}")
        if self.source != "synthetic" and not self.paths:
            raise ValueError(f"data.source={self.source!r} needs data.paths")


@dataclass
class ModelSection:
    preset: str = "tiny"  # a key of model.config.PRESETS
    overrides: dict = field(default_factory=dict)  # ModelConfig fields changed from the preset


@dataclass
class OptimConfig:
    lr: float = 4e-4
    betas: tuple = (0.9, 0.95)
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
    save_every: int = 1000
    keep_last: int = 3
    init_from: str | None = None  # weights of a previous stage: checkpoint dir, run dir (latest) or .safetensors


@dataclass
class LogConfig:
    every: int = 10  # steps between scalar logs
    tensorboard: bool = True
    wandb: bool = False  # needs `pip install wandb`; never required
    wandb_project: str = "longlrm"
    progress_bar: bool = True


@dataclass
class EvalConfig:
    every: int = 1000  # steps between evaluations; 0 disables periodic evaluation
    num_scenes: int = 4  # held-out scenes per evaluation
    lpips: bool = True  # LPIPS-VGG (skipped with a note if its weights are not installed)
    save_images: bool = True  # PNG grids of target / render per scene


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
