"""The ``infinite-id`` command line. Each sub-command lives in its own module and is registered here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="infinite-id",
    help="Infinite-ID: generate a person from one photo and a prompt, keeping the face and following the text.",
    no_args_is_help=True,
    add_completion=False,
)

# Sub-commands register themselves on import (one line per module below).
from . import bench as _bench  # noqa: F401,E402
from . import eval as _eval  # noqa: F401,E402
from . import faces as _faces  # noqa: F401,E402
from . import train as _train  # noqa: F401,E402


def main() -> None:
    app()


if __name__ == "__main__":
    main()
