"""The project's own error types: what a person can fix, said in one sentence.

The command line prints an :class:`InfiniteIDError` as one line (``Error: ...``, exit code 2); any other exception
is a programming error and keeps its traceback. Raise these for bad input, never a bare ``ValueError``/``OSError``
that happens to carry a good message: the CLI cannot tell those from bugs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class InfiniteIDError(Exception):
    """Base of every error a user causes and can fix (bad argument, file, model, config); one-line message."""


class UserInputError(InfiniteIDError, ValueError):
    """A bad value, file or setting (also a ``ValueError``, so callers that caught that keep working)."""


class MissingInputError(UserInputError, FileNotFoundError):
    """A named input (photo, folder, cache, checkpoint, model file) is not there."""


class OutputPathError(UserInputError, FileExistsError):
    """An output location that cannot be written, or whose writing would replace files this command did not make
    (also a ``FileExistsError``: an existing output is the usual case)."""


class ModelLoadError(InfiniteIDError, OSError):
    """A named model, adapter or encoder that cannot be read or downloaded (missing, broken, hub unreachable)."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (multi-line library messages folded, blank lines dropped)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__


def load_failures() -> tuple[type[BaseException], ...]:
    """What libraries raise when a named model cannot be read: missing or broken files (``OSError``,
    ``ValueError``, which includes a bad ``model_index.json`` and an invalid hub id; a truncated or refused pickle),
    an unreachable hub."""
    import pickle

    failures: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, pickle.UnpicklingError)
    try:
        import httpx  # the hub client's transport: a failing proxy raises its errors, which are not OSError

        failures += (httpx.HTTPError,)
    except ImportError:
        pass
    return failures


@contextlib.contextmanager
def model_loading(what: str) -> Iterator[None]:
    """Around the loading of one user-named model, adapter or encoder: a library's failure to read it becomes one
    :class:`ModelLoadError` naming ``what``; the project's own errors pass unchanged."""
    try:
        yield
    except InfiniteIDError:
        raise
    except load_failures() as exc:
        raise ModelLoadError(f"cannot load {what}: {one_line(exc)[:500]}") from exc
