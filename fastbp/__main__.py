"""``python -m fastbp``: the same command as the ``fastbp`` console script."""

import sys

from .cli import main

sys.exit(main())
