"""Old names of renamed public objects and moved modules, served for one release with a warning, so that users'
code and commands keep running."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import CodeType, ModuleType
from typing import Any

__all__ = ["MOVED_MODULES", "install_moved_modules", "renamed_names"]

#: The core's moved modules: old full name -> new full name (the world adds its own, infinite_id.world.legacy_paths).
MOVED_MODULES: dict[str, str] = {
    "infinite_id.prompts": "infinite_id.style_prompts",
    "infinite_id.tokenizer": "infinite_id.clip_tokenizer",
    "infinite_id.evaluation.prompts": "infinite_id.evaluation.prompt_sets",
    "infinite_id.training.modeling": "infinite_id.training.adapter_model",
}


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


def _warn_moved(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3)


class _MovedModuleLoader(importlib.abc.Loader):
    """Answers an old module path with the moved module itself (imports) or with running it (``python -m``)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn_moved(self.old, self.new)
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the old path's spec on the (already loaded) module

    def is_package(self, fullname: str) -> bool:
        return False

    def get_code(self, fullname: str) -> CodeType:
        """What ``python -m OLD`` runs: the moved module as ``__main__``, with the same arguments."""
        _warn_moved(self.old, self.new)
        source = f"import runpy\nrunpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, f"<{fullname}: moved to {self.new}>", "exec")


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of moved modules, before the path finders: a folder left at an old path (the world's
    ``weights/`` beside the old ``weights.py``) would otherwise be imported as an empty namespace package."""

    def __init__(self) -> None:
        self.moved: dict[str, str] = {}

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        new = self.moved.get(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(fullname, new))


def install_moved_modules(moved: dict[str, str]) -> None:
    """Serve ``moved`` (old full module name -> new one): ``import OLD`` gets the moved module itself (the same
    object, so patching one patches the other), ``python -m OLD`` runs the moved command; both warn."""
    finder = next((f for f in sys.meta_path if isinstance(f, _MovedModuleFinder)), None)
    if finder is None:
        finder = _MovedModuleFinder()
        sys.meta_path.insert(0, finder)  # it answers only the names in its table
    finder.moved.update(moved)
