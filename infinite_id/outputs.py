"""Output folders that never cost a user a file: checked before any work, replaced only when they are ours.

Every command that writes a folder goes through :func:`check_output_dir` before it loads or computes anything:

* a path that is a file, lies under a file, or cannot be written is refused (:class:`OutputPathError`);
* a folder that holds or contains the command's inputs is refused, ``--overwrite`` or not;
* a non-empty folder is replaced (``overwrite``) or resumed only when it carries the command's own marker (the
  file the command writes last, e.g. ``cache.json`` of ``train-prepare``); any other non-empty folder is refused.

Folders are assembled in a fresh hidden temporary folder beside the output (:func:`new_temp_dir`, never a fixed
name that could be a user's) and swapped in by :func:`replace_dir`. Single files go through :func:`atomic_write`
(or :func:`atomic_file` for writers that need a path): a reader sees the old file or the whole new one, never a
torn one, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import OutputPathError

__all__ = [
    "atomic_file",
    "atomic_write",
    "check_input_file",
    "check_output_dir",
    "check_writable",
    "fsync_path",
    "has_json_marker",
    "new_temp_dir",
    "public_name",
    "replace_dir",
]


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Raise :class:`OutputPathError` unless ``path`` is a folder (existing or not yet) this process can write.

    The test writes and removes a probe file in the nearest existing folder, which is what the command will do
    later (permission bits lie for root and on read-only mounts). Nothing is created at ``path``.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder: choose a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise OutputPathError(f"{what} {path} lies under {base}, which is a file: choose a folder")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".infinite-id-probe-"):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"{what} {path} cannot be written ({base}: {exc.strerror or exc}): choose a writable folder"
        ) from None
    return path


def has_json_marker(name: str, key: str, value: str) -> Callable[[Path], bool]:
    """A marker test: ``folder/name`` is a JSON object whose ``key`` is ``value`` (how a command knows its own)."""

    def test(folder: Path) -> bool:
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get(key) == value

    return test


def check_output_dir(
    out: str | os.PathLike,
    *,
    what: str,
    command: str,
    is_own: Callable[[Path], bool],
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool | None = False,
) -> bool:
    """Check an output folder before any work; return True when it holds a previous output of ``command``.

    Args:
        what: how the user named it (``--out``, ``output.dir``), for the messages.
        is_own: recognises a previous output of this command by its marker.
        inputs: files and folders the command reads; ``out`` may not be, or contain, any of them.
        overwrite: ``False`` refuses a previous output, ``True`` allows replacing it, ``None`` allows resuming it
            (the command adds to it and removes nothing it did not write).
    """
    out = check_writable(out, what)
    resolved = out.resolve()
    for source in inputs:  # a dataset lists many photos: resolve ``out`` once
        path = Path(source).resolve()
        if path == resolved or resolved in path.parents:
            raise OutputPathError(
                f"{what} {out} holds this command's input {source}: writing there could destroy it; choose a "
                "separate folder"
            )
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not is_own(out):
        raise OutputPathError(
            f"{what} {out} already holds files that `{command}` did not write; nothing was changed: "
            "choose a new or empty folder"
        )
    if overwrite is False:
        raise OutputPathError(
            f"{what} {out} already holds an earlier `{command}` output: add --overwrite to replace it, "
            "or choose another folder"
        )
    return True


def new_temp_dir(out: str | os.PathLike) -> Path:
    """A fresh, uniquely named hidden folder beside ``out`` (same file system, so it can be renamed into place)."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move the finished ``tmp`` to ``out``; a previous ``out`` (checked to be ours by the caller) is moved aside
    first and deleted only once the new one is in place, so a crash leaves one complete version."""
    tmp, out = Path(tmp), Path(out)
    old: Path | None = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _reserve_temp(path: Path) -> Path:
    """Create an empty, uniquely named hidden file beside ``path`` (created exclusively, so two writers never share
    one; mode from the umask, as a plain ``open`` would give)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover - 100 collisions of 32 bits


def fsync_path(path: str | os.PathLike) -> None:
    """Flush ``path`` (a file or a folder, e.g. after a rename into it) to disk, where the platform allows it."""
    path = Path(path)
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, move it onto ``path``.

    Whatever the block writes to the yielded path (``save_file``, ``image.save(tmp, format=...)``, a tar writer)
    appears at ``path`` whole or not at all; on an exception the temporary file is removed and ``path`` is left
    as it was. The temporary name is hidden, unique and ends in ``.tmp``, so give writers that guess the format
    from the suffix the format explicitly. ``fsync`` flushes the file and its folder (for checkpoints that must
    survive a power cut). The parent folder must exist.
    """
    path = Path(path)
    tmp = _reserve_temp(path)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_path(path.parent)


def atomic_write(
    path: str | os.PathLike,
    data: bytes | str | Callable[[Path], object],
    *,
    fsync: bool = False,
    encoding: str = "utf-8",
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`) and return ``path``.

    ``data`` is bytes, text (written with ``encoding``, newlines as given) or a callback that writes the file
    at the temporary path it is passed.
    """
    path = Path(path)
    with atomic_file(path, fsync=fsync) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        elif isinstance(data, str):
            with open(tmp, "w", encoding=encoding, newline="") as fh:
                fh.write(data)
        else:
            data(tmp)
    return path


def public_name(source: str | os.PathLike) -> str:
    """How an output (PNG metadata, adapter file, web page) names a model or file it used: a hub id as it is, a
    local path by its last component only, so that outputs shared with others do not reveal the machine's
    folders."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_absolute() or text.startswith((".", "~")) or path.exists() or "\\" in text:
        return path.resolve().name if path.name in ("", ".", "..") else path.name
    return text


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """Raise a one-line :class:`~infinite_id.errors.UserInputError` unless ``path`` is an existing file, saying
    which of the usual slips it is (a URL, which is never downloaded; a folder; a missing file)."""
    from .errors import MissingInputError, UserInputError

    text = str(path)
    if text.startswith(("http:/", "https:/", "ftp:/")):  # a Path has already collapsed "//" to "/"
        url = text.replace(":/", "://", 1) if "://" not in text else text
        raise UserInputError(f"{what} takes a local file, not a URL ({url}): download it first")
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder: give a file in it")
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist")
    return path
