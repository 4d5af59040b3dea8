"""The world's module paths from before it had subpackages (``infinite_id.world.retrain``, ``...world.factors``, ...),
kept for one release so that users' imports and commands keep working.

``import infinite_id.world.factors`` gets the moved module itself (``infinite_id.world.scene.factors``: the same
object), and ``python -m infinite_id.world.retrain ...`` runs the moved command (``python -m
infinite_id.world.trainers.retrain ...``), each with a :class:`DeprecationWarning`
(:func:`infinite_id.deprecation.install_moved_modules`). One table here instead of a thin alias file per old path, so
the package's folders show only its real layout.
"""

from __future__ import annotations

from ..deprecation import install_moved_modules

__all__ = ["MOVED_MODULES", "install"]

_TRAINERS = ("train_utils", "train_attributes", "train_clip", "train_face", "train_landmarks", "train_unet")

#: old module under ``infinite_id.world`` -> where it lives now, under the same package.
MOVED_MODULES: dict[str, str] = {
    **{name: f"scene.{name}" for name in ("factors", "render", "backgrounds", "styles", "captions", "dataset")},
    **{
        name: f"models.{name}"
        for name in ("face_model", "landmarks", "attributes", "configs", "weights", "world_metrics")
    },
    "modeling": "models.small_cnn",
    "tokenizer": "models.compact_tokenizer",
    **{name: f"trainers.{name}" for name in (*_TRAINERS, "train_vae", "train_adapters", "latent_cache", "retrain")},
    **{name: f"experiments.{name}" for name in ("reproduce", "ceilings", "text_probe", "doc_images", "examples")},
}


def install() -> None:
    """Serve the old paths (done once, when ``infinite_id.world`` is imported)."""
    install_moved_modules(
        {f"infinite_id.world.{old}": f"infinite_id.world.{new}" for old, new in MOVED_MODULES.items()}
    )
