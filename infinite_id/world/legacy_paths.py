"""The world's module paths from before it had subpackages (``infinite_id.world.retrain``, ``...world.factors``, ...),
kept for one release so that users' imports and commands keep working.

``import infinite_id.world.factors`` gets the moved module itself (``infinite_id.world.scene.factors``: the same
object, so patching one patches the other), and ``python -m infinite_id.world.retrain ...`` runs the moved command
(``python -m infinite_id.world.trainers.retrain ...``), each with a :class:`DeprecationWarning`. One table and one
import hook here instead of a thin alias file per old path, so the package's folders show only its real layout.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import CodeType, ModuleType

__all__ = ["MOVED_MODULES", "install"]

_PREFIX = "infinite_id.world."

#: old module under ``infinite_id.world`` -> where it lives now, under the same package.
MOVED_MODULES: dict[str, str] = {
    **{name: f"scene.{name}" for name in ("factors", "render", "backgrounds", "styles", "captions", "dataset")},
    **{
        name: f"models.{name}"
        for name in ("face_model", "landmarks", "attributes", "configs", "weights", "world_metrics")
    },
    "modeling": "models.small_cnn",
    "tokenizer": "models.compact_tokenizer",
    **{
        name: f"trainers.{name}"
        for name in (
            "train_utils",
            "train_attributes",
            "train_clip",
            "train_face",
            "train_landmarks",
            "train_unet",
            "train_vae",
            "train_adapters",
            "latent_cache",
            "retrain",
        )
    },
    **{name: f"experiments.{name}" for name in ("reproduce", "ceilings", "text_probe", "doc_images", "examples")},
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3)


class _MovedModuleLoader(importlib.abc.Loader):
    """Answers an old path with the moved module (imports) or with running it (``python -m``)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(self.old, self.new)
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the old path's spec on the (already loaded) module

    def is_package(self, fullname: str) -> bool:
        return False

    def get_code(self, fullname: str) -> CodeType:
        """What ``python -m OLD`` runs: the moved module as ``__main__``, with the same arguments."""
        _warn(self.old, self.new)
        source = f"import runpy\nrunpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, f"<{fullname}: moved to {self.new}>", "exec")


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        moved = MOVED_MODULES.get(fullname.removeprefix(_PREFIX)) if fullname.startswith(_PREFIX) else None
        if moved is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(fullname, _PREFIX + moved))


def install() -> None:
    """Serve the old paths (done once, when ``infinite_id.world`` is imported)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
