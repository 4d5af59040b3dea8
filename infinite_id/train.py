"""``python -m infinite_id.train CONFIG [--section.key=value ...]`` (also usable with ``accelerate launch -m``)."""

import sys

from infinite_id.training import main

if __name__ == "__main__":
    sys.exit(main())
