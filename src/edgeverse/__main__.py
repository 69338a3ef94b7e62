"""``python -m edgeverse``."""

import sys

from .cli import main

sys.exit(main())
