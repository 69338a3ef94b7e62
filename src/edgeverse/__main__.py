"""``python -m edgeverse``."""

import sys

from .cli import main

# Guarded: worker processes started with the 'spawn' method (Dask, process pools)
# re-import the main module and must not run the command line again.
if __name__ == "__main__":
    sys.exit(main())
