"""Stage 2: 512x512, 10K steps, initialised from stage 1.

    accelerate launch train/stage2.py [--config FILE] [key.sub=value ...] [--resume [CKPT]] [--run-dir DIR]

The config defaults to train/configs/stage2.yaml. Also runs as `python train/stage2.py ...` (one
process). All logic lives in train/trainer.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script: import the project from the repository root, not from train/.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from train.trainer import main

    main(sys.argv[1:], default_config=Path(__file__).resolve().parent / "configs" / "stage2.yaml", prog="stage2.py")
