"""Stage 1: 256x256, 32 inputs / 8 targets from a 64-128 frame window, 60K steps from scratch.

    accelerate launch train/stage1.py [--config FILE] [key.sub=value ...] [--resume [CKPT]] [--run-dir DIR]

The config defaults to train/configs/stage1.yaml. Also runs as `python train/stage1.py ...` (one
process). All logic lives in train/trainer.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script: import the project from the repository root, not from train/.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from train.trainer import main

    main(sys.argv[1:], default_config=Path(__file__).resolve().parent / "configs" / "stage1.yaml", prog="stage1.py")
