"""`python infer.py`: the reconstruction command run from a source checkout (installed: `longlrm-infer`).

The command itself is inference/infer.py; `python infer.py --help` lists its options.
"""

import sys

from inference.cli import EXIT_BAD_INPUT, run_command  # noqa: F401  (python -m refine imports them from here)
from inference.cli import resolve_device as _device  # noqa: F401
from inference.infer import main

if __name__ == "__main__":
    sys.exit(main())
