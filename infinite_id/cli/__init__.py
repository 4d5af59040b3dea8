"""The ``infinite-id`` command line. Each sub-command lives in its own module and is registered here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from ..errors import InfiniteIDError, one_line

HELP = """\
Infinite-ID: put the person from one photo into any scene or style a prompt describes, keeping the face
(identity-preserved personalization, ECCV 2024).

\b
Start here (offline, no model download):
  infinite-id info                         versions, devices, face models found
  infinite-id faces examples/astronaut.jpg the faces in a photo (--face-index)
  infinite-id generate --ref examples/portraits/woman_1.png \\
      --prompt "a photo of a woman wearing a yellow sweater, on the beach" \\
      --out outputs/                       PNGs with their settings inside
  infinite-id serve                        web UI on http://127.0.0.1:7860

Without --model, generate and serve use the default model: the miniature model that ships with the package, a 64 px
model trained from scratch on the miniature world's portraits (examples/portraits/; docs/world.md). It runs offline
in seconds, with its own face backend (mini), which reads those portraits, not real photos. Real photos need a
base model and an adapter: --model and --adapter (docs/cli.md). Train an adapter with `train`, measure it with
`eval`, time the pipeline with `bench`. `infinite-id COMMAND --help` explains each command.
"""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``Error: message`` on stderr and return the ``typer.Exit`` to raise (exit code 2: bad input)."""
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command so that the project's own errors (:class:`InfiniteIDError`) print as one line and exit 2;
    any other exception is a bug and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InfiniteIDError as exc:
            raise fail(one_line(exc)) from exc

    return wrapper


class _App(typer.Typer):
    """A Typer app whose every command goes through :func:`one_line_errors` (one place, not one per command)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            register(one_line_errors(func))
            return func

        return decorator


app = _App(
    name="infinite-id",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Sub-commands register themselves on import (one line per module below).
from . import bench as _bench  # noqa: F401,E402
from . import eval as _eval  # noqa: F401,E402
from . import faces as _faces  # noqa: F401,E402
from . import generate as _generate  # noqa: F401,E402
from . import info as _info  # noqa: F401,E402
from . import serve as _serve  # noqa: F401,E402
from . import train as _train  # noqa: F401,E402


def main() -> None:
    app()


if __name__ == "__main__":
    main()
