"""``python -m infinite_id.training CONFIG [--section.key=value ...]``."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
