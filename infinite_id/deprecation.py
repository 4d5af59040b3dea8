"""Old names of renamed public objects, served for one release with a warning, so that users' code keeps running."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["renamed_names"]


def renamed_names(module: str, renamed: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that answers each old name in ``renamed`` (old -> new) with the object now
    called new in ``namespace`` (the module's ``globals()``), and a :class:`DeprecationWarning`."""

    def __getattr__(name: str) -> Any:
        if name in renamed:
            warnings.warn(
                f"{module}.{name} was renamed {renamed[name]}; the old name goes in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return namespace[renamed[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
