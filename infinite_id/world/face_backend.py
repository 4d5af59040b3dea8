"""The ``mini`` backend: the miniature world's own face detector and face encoder (docs/world.md).

It reads renders of the miniature world (64 px head-and-shoulders portraits, or the default model's generated
images), not real photos. The world registers it with the core as the face backend ``mini`` (an entry point in
``pyproject.toml``; the core never imports it). Detection is the world's landmark detector
(:mod:`infinite_id.world.models.landmarks`): it
regresses the five ArcFace-order landmarks of **one** face and a face probability from the whole image, so it
finds at most one face per image; below ``threshold`` it reports none. The box it reports is derived from the
landmarks (where the face region of a render sits relative to them, measured on 200 renders; its overlap
with the renderer's own face box, as intersection over union, is about 0.7). The embedding is
the mini face encoder's (:class:`~infinite_id.world.models.face_model.MiniFaceEncoder`, 512-d) on the crop that
:func:`~infinite_id.world.models.face_model.align_world_face` makes; the CLIP crop uses the same template (hair and
jaw line are identity in the world), which is also what the world's adapters were trained with.

Two encoders ship: ``face_encoder`` (what adapters use) and ``face_encoder_eval`` (independently seeded, for
the identity metric only: :func:`world_eval_analyzer`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserInputError
from ..faces.alignment import apply_transform, estimate_similarity
from ..faces.base import DEFAULT_CLIP_CROP_SIZE, DetectedFace, FaceAnalyzer, FaceEncoderInfo, IdentityCrop, ImageInput
from ..faces.errors import BackendUnavailableError
from ..faces.factory import register_face_backend
from ..faces.image_io import DEFAULT_MAX_SIDE

__all__ = ["ENCODER_STAGES", "MiniFaceAnalyzer", "mini_encoder_info", "world_eval_analyzer"]

ENCODER_STAGES = ("face_encoder", "face_encoder_eval")
#: The face region of a render in the coordinates of the aligned crop, as fractions of its side (median of the
#: renderer's face boxes mapped into the 40 px crop frame over 200 renders: 7.8, 7.5, 31.2, 36.6 px).
FACE_BOX_IN_CROP = (0.195, 0.19, 0.78, 0.915)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def mini_encoder_info(weights_dir: str | Path, encoder: str = "face_encoder") -> FaceEncoderInfo:
    """The description of a mini face encoder stage, as adapters record it: the model name carries a digest of
    the weights, because two trainings of the encoder do not share an embedding space."""
    folder = Path(weights_dir) / encoder
    dim = json.loads((folder / "config.json").read_text())["embedding_dim"]
    return FaceEncoderInfo(backend="mini", model=f"mini_{encoder}-{_digest(folder / 'model.safetensors')}", dim=dim)


class MiniFaceAnalyzer(FaceAnalyzer):
    """The miniature world's face analyzer: landmark detector + mini face encoder, on CPU.

    Args:
        weights_dir: the world's weights folder (default: the shipped weights; see
            :func:`infinite_id.world.models.weights.resolve_weights_dir`). Needs its ``landmarks`` and encoder stages.
        encoder: ``"face_encoder"`` (default; the one adapters are trained with) or ``"face_encoder_eval"``.
        threshold: the detector's face probability below which an image has no face.
        batch_size: images per forward pass in :meth:`embed_images`.
    """

    backend_name = "mini"
    #: Renders are 64 px and their face boxes about 26 px on the short side.
    default_min_face_size = 16.0

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        encoder: str = "face_encoder",
        threshold: float = 0.5,
        batch_size: int = 256,
        min_face_size: float | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        super().__init__(min_face_size=min_face_size, max_side=max_side)
        if encoder not in ENCODER_STAGES:
            raise UserInputError(f"Unknown mini face encoder {encoder!r}; choose one of {', '.join(ENCODER_STAGES)}.")
        if not 0.0 < threshold < 1.0:
            raise UserInputError(f"threshold is a probability in (0, 1), got {threshold}")
        try:
            from .models.face_model import MiniFaceEncoder
            from .models.landmarks import LandmarkDetector
            from .models.weights import resolve_weights_dir
        except ImportError as exc:  # torch is missing
            raise BackendUnavailableError(f"The mini face backend needs torch ({exc}).") from exc
        try:
            root = resolve_weights_dir(weights_dir, stages=("landmarks", encoder))
        except FileNotFoundError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        self.weights_dir = root
        self.encoder_stage = encoder
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.detector = LandmarkDetector.from_pretrained(root / "landmarks").eval()
        self.encoder = MiniFaceEncoder.from_pretrained(root / encoder).eval()
        self._info = mini_encoder_info(root, encoder)

    @property
    def info(self) -> FaceEncoderInfo:
        return self._info

    def face_from_landmarks(self, landmarks: np.ndarray, score: float, size: tuple[int, int]) -> DetectedFace:
        """A :class:`DetectedFace` from five landmarks. The box is the crop frame's face region placed at the
        landmarks' position and scale, kept upright (a rolled head gets the same box, not a larger one)."""
        from .models.face_model import world_face_template

        side = self.encoder.config.input_size
        to_image = estimate_similarity(world_face_template(side), np.asarray(landmarks, np.float64))
        x0, y0, x1, y1 = (v * side for v in FACE_BOX_IN_CROP)
        centre = apply_transform(to_image, np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]
        half = 0.5 * float(np.hypot(*to_image[:, 0])) * np.array([x1 - x0, y1 - y0])
        width, height = size
        box = (
            max(0.0, centre[0] - half[0]),
            max(0.0, centre[1] - half[1]),
            min(float(width), centre[0] + half[0]),
            min(float(height), centre[1] + half[1]),
        )
        return DetectedFace(box=box, keypoints=landmarks, score=score)

    def _detect_many(self, images: list[Image.Image]) -> list[DetectedFace | None]:
        found: list[DetectedFace | None] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            for image, result in zip(chunk, self.detector.detect(chunk), strict=True):
                if result.face_probability < self.threshold:
                    found.append(None)
                else:
                    found.append(self.face_from_landmarks(result.landmarks, result.face_probability, image.size))
        return found

    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        face = self._detect_many([image])[0]
        return [] if face is None else [face]

    def _embed_many(self, images: list[Image.Image], faces: list[DetectedFace]) -> np.ndarray:
        import torch

        from .models.face_model import align_world_face, crops_to_tensor

        size = self.encoder.config.input_size
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                crops = [
                    align_world_face(image, face.keypoints, size)
                    for image, face in zip(
                        images[start : start + self.batch_size], faces[start : start + self.batch_size], strict=True
                    )
                ]
                out.append(self.encoder(crops_to_tensor(crops)).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.info.dim), np.float32)

    def _embed(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        return self._embed_many([image], [face])[0]

    def align(self, image: ImageInput, face: DetectedFace, size: int = DEFAULT_CLIP_CROP_SIZE) -> Image.Image:
        """The face aligned on the world's crop template (keeps hair and jaw line) at ``size`` x ``size``."""
        from .models.face_model import align_world_face

        return align_world_face(self.load(image), face.keypoints, size)

    def identity(
        self, image: ImageInput, face_index: int | None = None, clip_crop_size: int = DEFAULT_CLIP_CROP_SIZE
    ) -> IdentityCrop:
        """As for every backend, but the CLIP crop is on the world's template, as the world's adapters expect."""
        crop = super().identity(image, face_index=face_index, clip_crop_size=clip_crop_size)
        crop.clip_crop = self.align(image, crop.face, clip_crop_size)
        return crop

    def embed_images(self, images: list[ImageInput]) -> tuple[np.ndarray, np.ndarray]:
        """Batched detection and embedding, for metrics over many images.

        Returns ``(embeddings, found)``: ``(N, dim)`` unit-norm float32 rows (zeros where no face was found)
        and a boolean ``(N,)`` mask of the images with a face.
        """
        rgb = [self.load(image) for image in images]
        faces = self._detect_many(rgb)
        found = np.array([f is not None for f in faces], dtype=bool)
        embeddings = np.zeros((len(rgb), self.info.dim), np.float32)
        kept = [i for i in range(len(rgb)) if found[i]]
        if kept:
            raw = self._embed_many([rgb[i] for i in kept], [faces[i] for i in kept])
            embeddings[kept] = raw / np.linalg.norm(raw, axis=1, keepdims=True).clip(1e-12)
        return embeddings, found


def world_eval_analyzer(weights_dir: str | Path | None = None, **kwargs) -> MiniFaceAnalyzer:
    """The analyzer with the independently trained evaluation encoder (``face_encoder_eval``): identity metrics
    should not be measured with the encoder the adapter was trained on."""
    return MiniFaceAnalyzer(weights_dir=weights_dir, encoder="face_encoder_eval", **kwargs)


# The entry point in pyproject.toml finds this backend without importing the world; registering here as well keeps
# "mini" known to world code run from a checkout whose installed metadata predates the entry point.
register_face_backend("mini", MiniFaceAnalyzer)
