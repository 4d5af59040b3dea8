"""Faces: detection, five-point alignment and identity embeddings for the identity encoder.

Typical use::

    from infinite_id.faces import get_face_analyzer

    analyzer = get_face_analyzer()            # "auto": insightface (ArcFace 512-d) if it runs here, else dlib
    crop = analyzer.identity("photo.jpg")     # largest face; face_index=... for another
    crop.embedding                            # float32 (dim,), unit length
    crop.clip_crop                            # aligned 224 x 224 RGB face for the CLIP branch

Backends load lazily, so importing this package needs only numpy and Pillow. See docs/faces.md.
"""

from .alignment import ARCFACE_TEMPLATE_112, align_face, arcface_template, estimate_similarity
from .base import (
    DEFAULT_CLIP_CROP_SIZE,
    DetectedFace,
    FaceAnalyzer,
    FaceEncoderInfo,
    IdentityCrop,
    check_compatible,
    normalize_embedding,
)
from .errors import (
    BackendUnavailableError,
    FaceError,
    FaceIndexError,
    FaceTooSmallError,
    InvalidImageError,
    NoFaceError,
)
from .factory import (
    AUTO_ORDER,
    analyzer_for,
    face_backend_factory,
    face_backend_names,
    get_face_analyzer,
    is_embedding_input,
    prepare_identity,
    register_face_backend,
)
from .image_io import load_image
from .precomputed import PrecomputedFaceEncoder, load_embeddings, save_embeddings

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "AUTO_ORDER",
    "DEFAULT_CLIP_CROP_SIZE",
    "BackendUnavailableError",
    "DetectedFace",
    "FaceAnalyzer",
    "FaceEncoderInfo",
    "FaceError",
    "FaceIndexError",
    "FaceTooSmallError",
    "IdentityCrop",
    "InvalidImageError",
    "NoFaceError",
    "PrecomputedFaceEncoder",
    "align_face",
    "analyzer_for",
    "arcface_template",
    "check_compatible",
    "estimate_similarity",
    "face_backend_factory",
    "face_backend_names",
    "get_face_analyzer",
    "is_embedding_input",
    "load_embeddings",
    "load_image",
    "normalize_embedding",
    "prepare_identity",
    "register_face_backend",
    "save_embeddings",
]


def __getattr__(name: str):
    # The backend classes import their heavy dependencies only when asked for.
    if name == "InsightFaceAnalyzer":
        from .insightface_backend import InsightFaceAnalyzer

        return InsightFaceAnalyzer
    if name == "DlibFaceAnalyzer":
        from .dlib_backend import DlibFaceAnalyzer

        return DlibFaceAnalyzer
    if name == "BACKENDS":  # the registered backends' names (a constant before backends could plug in)
        return face_backend_names()
    if name in ("MiniFaceAnalyzer", "world_eval_analyzer"):
        # Deprecated (one release): the mini backend is the world's (infinite_id.world.face_backend); found through
        # the registry, so that this package does not import the world.
        import sys
        import warnings

        warnings.warn(f"import {name} from infinite_id.world.face_backend", DeprecationWarning, stacklevel=2)
        return getattr(sys.modules[face_backend_factory("mini").__module__], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
