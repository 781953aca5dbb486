"""Scalars and images to TensorBoard (default) and optionally Weights & Biases; main process only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class Tracker:
    def __init__(self, run_dir: Path, tensorboard: bool, wandb: bool, wandb_project: str, config: dict[str, Any]):
        self.writer = None
        self.wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "logs"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise SystemExit("error: log.wandb=true needs `pip install wandb` (or set log.wandb=false)") from None
            self.wandb = wandb_module.init(project=wandb_project, dir=str(run_dir), config=config,
                                           name=run_dir.name, resume="allow")

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def image(self, name: str, image: np.ndarray, step: int) -> None:
        """image [H, W, 3] uint8."""
        if self.writer is not None:
            self.writer.add_image(name, image, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb as wandb_module

            self.wandb.log({name: wandb_module.Image(image)}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
