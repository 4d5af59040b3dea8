"""The face-analysis contract: what a backend detects, how a face is described, and what the identity encoder gets.

A backend (insightface, dlib, precomputed) subclasses :class:`FaceAnalyzer` and implements two methods,
``_detect`` and ``_embed``, on an RGB :class:`PIL.Image.Image`. Everything users touch (loading any kind of input,
sorting faces, choosing one, refusing tiny faces, aligning crops, normalising embeddings, clear errors) lives
here, once, so every backend behaves the same.
"""

from __future__ import annotations

import abc
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserInputError
from .alignment import align_face
from .errors import FaceError, FaceIndexError, FaceTooSmallError, NoFaceError
from .image_io import DEFAULT_MAX_SIDE, load_image, source_name

logger = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image | np.ndarray

#: Side in pixels of the aligned face crop handed to the CLIP image encoder (as IP-Adapter-FaceID-Plus does).
DEFAULT_CLIP_CROP_SIZE = 224


@dataclass(frozen=True)
class FaceEncoderInfo:
    """Which face encoder produced an identity embedding. Adapters store it so that a mismatch is caught early."""

    backend: str
    model: str
    dim: int

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "dim": int(self.dim)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceEncoderInfo:
        missing = {"backend", "model", "dim"} - set(data)
        if missing:
            raise UserInputError(f"Face encoder description {data!r} lacks {sorted(missing)}.")
        return cls(backend=str(data["backend"]), model=str(data["model"]), dim=int(data["dim"]))

    def describe(self) -> str:
        return f"{self.backend}/{self.model} ({self.dim}-d)"


def check_compatible(
    adapter_info: FaceEncoderInfo, analyzer_info: FaceEncoderInfo, allow_model_mismatch: bool = False
) -> None:
    """Refuse to feed an adapter with embeddings from a face encoder it was not trained on.

    A different backend or embedding size is always an error. A different model of the same backend and size
    (say insightface ``buffalo_l`` against ``buffalo_s``) is an error too, because separately trained recognition
    networks do not share an embedding space; ``allow_model_mismatch=True`` turns that case into a warning, for a
    pack that was only renamed or a model you know to be the same network.
    """
    if adapter_info == analyzer_info:
        return
    both = (
        f"the adapter was trained with {adapter_info.describe()}, but the face analyzer is {analyzer_info.describe()}"
    )
    if adapter_info.dim != analyzer_info.dim or adapter_info.backend != analyzer_info.backend:
        raise UserInputError(
            f"Face encoder mismatch: {both}. Load the analyzer the adapter expects, e.g. "
            f"get_face_analyzer({adapter_info.backend!r}, model={adapter_info.model!r})."
        )
    if not allow_model_mismatch:
        raise UserInputError(
            f"Face encoder model mismatch: {both}. Different recognition models do not share an embedding space; "
            f"use model={adapter_info.model!r}, or pass allow_model_mismatch=True if they are the same network."
        )
    warnings.warn(f"Face encoder model differs: {both}; continuing because allow_model_mismatch=True.", stacklevel=2)


@dataclass
class DetectedFace:
    """One detected face, in the pixel coordinates of the loaded image (the centre of pixel (0, 0) is (0, 0)).

    ``keypoints`` holds five (x, y) points in the ArcFace order: the eye on the image's left, the eye on its
    right, the nose tip, the left and the right mouth corner. ``score`` is the detector's confidence; its scale
    depends on the backend (a probability for insightface, a HOG margin for dlib).
    """

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float

    def __post_init__(self) -> None:
        self.box = tuple(float(v) for v in self.box)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(5, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def short_side(self) -> float:
        """The smaller side of the box in pixels: what decides whether the face is large enough to embed."""
        return min(self.width, self.height)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "width": round(self.width, 1),
            "height": round(self.height, 1),
            "keypoints": np.round(self.keypoints, 1).tolist(),
        }

    def summary(self) -> str:
        x1, y1, x2, y2 = self.box
        where = f"({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})"
        return f"{self.width:.0f}x{self.height:.0f} px at {where}, score {self.score:.2f}"


@dataclass
class IdentityCrop:
    """What the identity encoder consumes: the face embedding and the aligned face crop for the CLIP branch."""

    embedding: np.ndarray
    clip_crop: Image.Image
    face: DetectedFace
    source: str
    info: FaceEncoderInfo | None = field(default=None)
    #: (width, height) of the loaded image ``face.box`` refers to (after any downscaling on load).
    image_size: tuple[int, int] | None = None


def normalize_embedding(vector: np.ndarray, source: str = "embedding") -> np.ndarray:
    """Return ``vector`` as a float32 (dim,) array of unit length; refuse empty, non-finite or zero vectors."""
    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise FaceError(f"The face embedding from {source} is empty or holds NaN/inf values.")
    norm = np.linalg.norm(array)
    if norm < 1e-12:
        raise FaceError(f"The face embedding from {source} is all zeros.")
    return (array / norm).astype(np.float32)


def describe_faces(faces: list[DetectedFace]) -> str:
    return "; ".join(f"#{i}: {face.summary()}" for i, face in enumerate(faces))


class FaceAnalyzer(abc.ABC):
    """Detects faces, aligns crops and computes identity embeddings. Subclasses implement ``_detect``/``_embed``.

    Args:
        min_face_size: faces whose box is smaller than this many pixels on its short side are refused by
            :meth:`identity` (they are still listed by :meth:`detect`): their embeddings are unreliable.
        max_side: long-side cap applied when loading images (larger ones are downscaled).
    """

    #: Default smallest face (short side of the box, in pixels) that :meth:`identity` accepts.
    default_min_face_size: float = 32.0

    def __init__(self, min_face_size: float | None = None, max_side: int = DEFAULT_MAX_SIDE) -> None:
        self.min_face_size = self.default_min_face_size if min_face_size is None else float(min_face_size)
        self.max_side = int(max_side)

    @property
    @abc.abstractmethod
    def info(self) -> FaceEncoderInfo:
        """The encoder that :meth:`embed` uses (backend, model name, embedding size)."""

    @abc.abstractmethod
    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        """Detect faces in an RGB image; any order."""

    @abc.abstractmethod
    def _embed(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        """Compute the raw identity embedding of ``face`` in the RGB image."""

    def load(self, image: ImageInput) -> Image.Image:
        """Load any supported input as an RGB image (see :func:`infinite_id.faces.image_io.load_image`)."""
        return load_image(image, max_side=self.max_side)

    def detect(self, image: ImageInput) -> list[DetectedFace]:
        """Detect the faces in ``image``, largest box first."""
        rgb = self.load(image)
        faces = self._detect(rgb)
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def embed(self, image: ImageInput, face: DetectedFace) -> np.ndarray:
        """The L2-normalised float32 identity embedding of ``face`` (shape ``(info.dim,)``)."""
        rgb = self.load(image)
        return normalize_embedding(self._embed(rgb, face), source_name(image))

    def align(self, image: ImageInput, face: DetectedFace, size: int = DEFAULT_CLIP_CROP_SIZE) -> Image.Image:
        """The face aligned by its five keypoints onto the ArcFace template scaled to ``size`` x ``size``."""
        return align_face(self.load(image), face.keypoints, size)

    def select_face(self, faces: list[DetectedFace], face_index: int | None, source: str) -> DetectedFace:
        """Pick the face to use (the largest when ``face_index`` is None), with errors that list what was found."""
        if not faces:
            raise NoFaceError(
                f"No face found in {source}. Use a photo where the face is visible, frontal and at least "
                f"{self.min_face_size:.0f} px wide, or try another backend (`infinite-id faces {source}`)."
            )
        if face_index is None:
            if len(faces) > 1:
                logger.info("%d faces in %s, using the largest (#0): %s", len(faces), source, describe_faces(faces))
            return faces[0]
        if not -len(faces) <= face_index < len(faces):
            raise FaceIndexError(
                f"face_index={face_index} but {source} has {len(faces)} face(s), largest first: "
                f"{describe_faces(faces)}."
            )
        return faces[face_index]

    def identity(
        self, image: ImageInput, face_index: int | None = None, clip_crop_size: int = DEFAULT_CLIP_CROP_SIZE
    ) -> IdentityCrop:
        """Everything the identity encoder needs from one photo: embedding and aligned CLIP crop of one face."""
        source = source_name(image)
        rgb = self.load(image)
        faces = sorted(self._detect(rgb), key=lambda face: face.area, reverse=True)
        face = self.select_face(faces, face_index, source)
        if face.short_side < self.min_face_size:
            raise FaceTooSmallError(
                f"The face in {source} ({face.summary()}) is smaller than {self.min_face_size:.0f} px, too small "
                f"for a reliable identity embedding. Use a larger or closer photo of the face, or lower "
                f"min_face_size at your own risk."
            )
        embedding = normalize_embedding(self._embed(rgb, face), source)
        clip_crop = align_face(rgb, face.keypoints, clip_crop_size)
        return IdentityCrop(
            embedding=embedding, clip_crop=clip_crop, face=face, source=source, info=self.info, image_size=rgb.size
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.describe()})"
