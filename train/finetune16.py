"""16-view fine-tune: stage 3 settings with 16 input views, initialised from stage 3.

    accelerate launch train/finetune16.py [--config FILE] [key.sub=value ...] [--resume [CKPT]] [--run-dir DIR]

The config defaults to train/configs/finetune16.yaml. Also runs as `python train/finetune16.py ...` (one
process). All logic lives in train/trainer.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script: import the project from the repository root, not from train/.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from train.trainer import main

    config = Path(__file__).resolve().parent / "configs" / "finetune16.yaml"
    main(sys.argv[1:], default_config=config, prog="finetune16.py")
