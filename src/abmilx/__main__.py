"""`python -m abmilx`: the same command as the `abmilx` console script."""

import sys

from abmilx.cli import main

sys.exit(main())
