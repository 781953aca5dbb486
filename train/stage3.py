"""Stage 3: full frames (960x544), whole-video windows, FoV augmentation, training-time pruning;
10K steps from stage 2.

    accelerate launch train/stage3.py [--config FILE] [key.sub=value ...] [--resume [CKPT]] [--run-dir DIR]

The config defaults to train/configs/stage3.yaml. Also runs as `python train/stage3.py ...` (one
process). All logic lives in train/trainer.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script: import the project from the repository root, not from train/.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from train.trainer import main

    main(sys.argv[1:], default_config=Path(__file__).resolve().parent / "configs" / "stage3.yaml", prog="stage3.py")
