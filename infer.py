"""`python infer.py`: the reconstruction command run from a source checkout (installed: `longlrm-infer`).

The command itself is inference/infer.py; `python infer.py --help` lists its options.
"""

import sys

from inference.infer import main

if __name__ == "__main__":
    sys.exit(main())
