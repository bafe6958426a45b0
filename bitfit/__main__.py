"""``python -m bitfit``: see ``bitfit.cli``."""

from __future__ import annotations

import sys

from bitfit.cli import main

if __name__ == "__main__":
    sys.exit(main())
