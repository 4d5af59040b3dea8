"""Registries through which optional parts (the miniature world, a third-party face backend) plug into the core.

The core owns each registry and never imports what plugs into it, so the dependency runs one way: a plugin either
calls a ``register_*`` function (e.g. :func:`infinite_id.faces.register_face_backend`) or declares a Python entry
point in its ``pyproject.toml``::

    [project.entry-points."infinite_id.face_backends"]
    mybackend = "my_package.faces:MyFaceAnalyzer"

Entry points are listed by name without importing anything and loaded on first use, so a plugin that is declared but
missing (a trimmed install) costs nothing until asked for, and then fails as "unavailable", not at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import metadata
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["PluginLoadError", "PluginRegistry"]

T = TypeVar("T")


class PluginLoadError(ImportError):
    """A registered entry point that cannot be imported (its module is missing or broken)."""


class PluginRegistry(Generic[T]):
    """Named objects of one kind: registered in code first, then a group of entry points, loaded lazily.

    Args:
        group: the entry-point group read (``infinite_id.face_backends``, ``infinite_id.default_models``).
        kind: what an entry is, for messages ("face backend").
    """

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind
        self._registered: dict[str, Callable[[], T]] = {}
        self._declared: dict[str, Callable[[], T]] | None = None  # entry points, read on first use
        self._loaded: dict[str, T] = {}

    def register(self, name: str, value: T | None = None, *, loader: Callable[[], T] | None = None) -> None:
        """Register ``value`` under ``name``, or a zero-argument ``loader`` that returns it when first asked for.

        Registered in code beats an entry point of the same name, and a later registration replaces an earlier one
        (a plugin may override a built-in)."""
        if (value is None) == (loader is None):
            raise TypeError("register() takes a value or a loader, not both")
        self._loaded.pop(name, None)
        self._registered[name] = (lambda: value) if loader is None else loader  # type: ignore[assignment,return-value]

    def unregister(self, name: str) -> None:
        """Forget ``name`` wherever it came from (tests, or a plugin withdrawing what it cannot serve)."""
        self._registered.pop(name, None)
        self._entry_points().pop(name, None)
        self._loaded.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Every name, registered in code first (in order), then entry points by name; nothing is imported."""
        return tuple(dict.fromkeys([*self._registered, *self._entry_points()]))

    def __contains__(self, name: object) -> bool:
        return name in self._registered or name in self._entry_points()

    def get(self, name: str) -> T:
        """The object registered as ``name``, loading it on first use.

        Raises:
            KeyError: nothing is registered under ``name``.
            PluginLoadError: it is declared, but its module cannot be imported.
        """
        if name in self._loaded:
            return self._loaded[name]
        loader = self._registered.get(name) or self._entry_points().get(name)
        if loader is None:
            raise KeyError(name)
        try:
            value = loader()
        except ImportError as exc:
            raise PluginLoadError(f"The {self.kind} {name!r} is declared but cannot be imported: {exc}") from exc
        self._loaded[name] = value
        return value

    def _entry_points(self) -> dict[str, Callable[[], T]]:
        if self._declared is None:
            found = sorted(metadata.entry_points(group=self.group), key=lambda ep: ep.name)
            self._declared = {ep.name: ep.load for ep in found}
            for entry_point in found:
                logger.debug("%s %r declared by entry point %s", self.kind, entry_point.name, entry_point.value)
        return self._declared
