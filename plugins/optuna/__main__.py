"""``python -m robustnas.plugins.optuna --study NAME --storage URL --n-trials N ...``: one worker."""

import sys

from ._worker import main

if __name__ == "__main__":
    sys.exit(main())
