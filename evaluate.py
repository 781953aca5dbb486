"""`python evaluate.py`: the DL3DV-140 evaluation run from a source checkout (installed: `longlrm-evaluate`).

The command itself is inference/evaluate.py; `python evaluate.py --help` lists its options.
"""

import sys

from inference.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
