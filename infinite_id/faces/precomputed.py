"""The precomputed backend: an identity embedding the user computed elsewhere (``.npy`` or ``.safetensors``).

No detection runs. :meth:`PrecomputedFaceEncoder.detect` reports one "face" covering the centred square of the
image, with the ArcFace template's keypoints placed inside it, so the CLIP crop of :meth:`identity` is the
centre-cropped image resized to the crop size: give a photo already cropped to the face for the CLIP branch.

The encoder that produced the vectors must be stated, since an adapter checks it: pass ``info``, or store
``backend`` and ``model`` in the safetensors metadata (see :func:`save_embeddings`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MissingInputError, UserInputError
from .alignment import ARCFACE_TEMPLATE_112
from .base import DetectedFace, FaceAnalyzer, FaceEncoderInfo, ImageInput, normalize_embedding
from .errors import FaceIndexError
from .image_io import DEFAULT_MAX_SIDE, source_name

#: The tensor name used by :func:`save_embeddings`; a file with one tensor of another name works as well.
EMBEDDING_KEY = "embedding"
UNKNOWN = "unknown"


def load_embeddings(source: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, dict[str, str], str]:
    """Read (N, dim) float32 embeddings, the file's metadata and a name for messages, from a file or an array."""
    if isinstance(source, np.ndarray):
        array, metadata, name = source, {}, source_name(source)
    else:
        path = Path(source).expanduser()
        name = str(source)
        if not path.is_file():
            raise MissingInputError(f"Embedding file not found: {name}")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise UserInputError(
                    f"{name} is not a readable .npy array (pickled files are refused): {exc}"
                ) from exc
            metadata = {}
        elif suffix == ".safetensors":
            array, metadata = _read_safetensors(path, name)
        else:
            raise UserInputError(f"{name}: precomputed embeddings must be a .npy or .safetensors file.")
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise UserInputError(f"{name} holds {array.dtype} values, not an embedding.")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise UserInputError(f"{name} has shape {array.shape}; expected (dim,) or (N, dim) embeddings.")
    return array.astype(np.float32), metadata, name


def _read_safetensors(path: Path, name: str) -> tuple[np.ndarray, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            keys = list(handle.keys())
            metadata = dict(handle.metadata() or {})
            if EMBEDDING_KEY in keys:
                key = EMBEDDING_KEY
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise UserInputError(f"{name} holds tensors {keys}; name the embedding tensor {EMBEDDING_KEY!r}.")
            return handle.get_tensor(key), metadata
    except SafetensorError as exc:
        raise UserInputError(f"{name} is not a valid safetensors file: {exc}") from exc


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray, info: FaceEncoderInfo) -> None:
    """Write embeddings to a safetensors file whose metadata names the encoder, for the precomputed backend."""
    from safetensors.numpy import save_file

    array = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if array.shape[-1] != info.dim:
        raise UserInputError(f"Embeddings of shape {array.shape} do not match {info.describe()}.")
    metadata = {"backend": info.backend, "model": info.model, "dim": str(info.dim)}
    save_file({EMBEDDING_KEY: array}, str(path), metadata=metadata)


class PrecomputedFaceEncoder(FaceAnalyzer):
    """Serves a precomputed identity embedding instead of running a face model.

    Args:
        path_or_array: ``.npy`` / ``.safetensors`` file or array, shaped (dim,) or (N, dim) (one row per face;
            ``face_index`` picks the row, default the first).
        info: the encoder that produced the vectors. If omitted, the safetensors metadata (``backend``,
            ``model``) is used; failing that, backend ``"precomputed"`` and model ``"unknown"``, which any
            adapter will refuse with a message saying to pass ``info``.
    """

    backend_name = "precomputed"

    def __init__(
        self,
        path_or_array: str | os.PathLike | np.ndarray,
        info: FaceEncoderInfo | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        super().__init__(min_face_size=0.0, max_side=max_side)
        self.embeddings, metadata, self.source = load_embeddings(path_or_array)
        dim = int(self.embeddings.shape[1])
        if info is None:
            info = FaceEncoderInfo(
                backend=metadata.get("backend", self.backend_name), model=metadata.get("model", UNKNOWN), dim=dim
            )
        elif info.dim != dim:
            raise UserInputError(f"{self.source} holds {dim}-d embeddings but info says {info.describe()}.")
        self._info = info
        for row in range(len(self.embeddings)):
            normalize_embedding(self.embeddings[row], f"{self.source} row {row}")

    @property
    def info(self) -> FaceEncoderInfo:
        return self._info

    def embedding(self, face_index: int | None = None) -> np.ndarray:
        """The stored embedding (row ``face_index``, default 0), L2-normalised."""
        index = 0 if face_index is None else face_index
        count = len(self.embeddings)
        if not -count <= index < count:
            raise FaceIndexError(f"face_index={face_index} but {self.source} holds {count} embedding(s).")
        return normalize_embedding(self.embeddings[index], self.source)

    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        side = min(image.size)
        left, top = (image.width - side) / 2.0, (image.height - side) / 2.0
        keypoints = ARCFACE_TEMPLATE_112 * (side / 112.0) + [left, top]
        return [DetectedFace(box=(left, top, left + side, top + side), keypoints=keypoints, score=1.0)]

    def _embed(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        return self.embedding(0)

    def identity(self, image: ImageInput, face_index: int | None = None, clip_crop_size: int = 224):
        """The stored embedding (row ``face_index``) with the centre-cropped ``image`` as the CLIP crop."""
        crop = super().identity(image, None, clip_crop_size)
        crop.embedding = self.embedding(face_index)
        crop.source = f"{self.source} (CLIP crop from {crop.source})"
        crop.image_size = None  # its "face" is the whole photo: no face box to report
        return crop
