"""The evaluation's metric models, built from the miniature world's weights.

The project's scorers (:mod:`infinite_id.evaluation.metrics`) take models as objects; this module supplies the
world's: the mini CLIP for CLIP-T and CLIP-I, the ``mini`` face backend (mini face detector + a mini face
encoder) for ID similarity, and the attribute classifier for exact attribute accuracy.

Faces are located by the detector in generated images. Reference photos are rendered by the evaluation itself,
so their landmarks are known exactly: :class:`KnownLayoutFaceAnalyzer` takes them as ``known_layouts`` (keyed by the
image's pixels) and uses them instead of the detector's guess whenever it sees exactly those pixels. A copy of
the reference therefore scores an ID similarity of exactly 1, the ceiling of the metric, and the detector's own
error shows up only where it belongs, on generated images (:func:`detector_ceiling` measures it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...evaluation.metrics import ClipScorer
from ...faces.base import DetectedFace
from ..face_backend import MiniFaceAnalyzer
from .attributes import AttributeClassifier

__all__ = [
    "SEMANTIC_ATTRIBUTES",
    "KnownLayoutFaceAnalyzer",
    "detector_ceiling",
    "image_fingerprint",
    "load_attribute_scorer",
    "load_clip_scorer",
    "semantic_scores",
]

#: The attributes the prompt controls (gender belongs to the identity, so it is not a semantic score).
SEMANTIC_ATTRIBUTES: tuple[str, ...] = ("background", "clothing", "clothing_colour", "accessory", "style")


def image_fingerprint(image: Image.Image) -> str:
    """A key for exactly these pixels (mode, size and bytes), independent of the file they came from."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.size}".encode() + np.asarray(rgb).tobytes()).hexdigest()
    return digest[:32]


class KnownLayoutFaceAnalyzer(MiniFaceAnalyzer):
    """The ``mini`` face backend (detector + mini face encoder), told the exact landmarks of some images.

    Args:
        weights_dir, encoder, threshold: as for :class:`~infinite_id.world.face_backend.MiniFaceAnalyzer`
            (``encoder="face_encoder_eval"`` for the identity metric, ``"face_encoder"`` for the adapters' input).
        known_layouts: ``{image_fingerprint(image): five landmarks}`` for images whose face is known exactly
            (the rendered reference photos); those images skip the detector.
    """

    def __init__(self, *args, known_layouts: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.known_layouts = {
            k: np.asarray(v, dtype=np.float64).reshape(5, 2) for k, v in (known_layouts or {}).items()
        }

    def remember(self, image: Image.Image, landmarks) -> None:
        """Use ``landmarks`` for these exact pixels from now on."""
        self.known_layouts[image_fingerprint(image)] = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)

    def _detect_many(self, images: list[Image.Image]) -> list[DetectedFace | None]:
        known = [self.known_layouts.get(image_fingerprint(image)) for image in images]
        unknown = [i for i, k in enumerate(known) if k is None]
        detected = iter(super()._detect_many([images[i] for i in unknown]) if unknown else [])
        return [
            self.face_from_landmarks(k, 1.0, image.size) if k is not None else next(detected)
            for image, k in zip(images, known, strict=True)
        ]


def detector_ceiling(analyzer: KnownLayoutFaceAnalyzer, images: Sequence[Image.Image]) -> dict[str, float | None]:
    """How close the detector gets to the known layouts on the reference photos themselves: the mean cosine between
    the embedding of each face located by the detector and by its layout (0 where the detector finds no face), and
    the detector's hit rate. This is the practical ceiling of ID similarity for generated images, whose faces only
    the detector can locate."""
    if not images:
        return {"face_sim": None, "face_detection_rate": None}
    sims, hits = [], 0
    for image in images:
        known = analyzer.known_layouts.get(image_fingerprint(image))
        if known is None:
            raise ValueError("detector_ceiling needs images whose layout the analyzer knows")
        exact = analyzer.embed(image, analyzer.face_from_landmarks(known, 1.0, image.size))
        found = MiniFaceAnalyzer._detect_many(analyzer, [image])[0]
        if found is None:
            sims.append(0.0)
            continue
        hits += 1
        sims.append(float(np.dot(exact, analyzer.embed(image, found))))
    return {"face_sim": float(np.mean(sims)), "face_detection_rate": hits / len(images)}


def load_clip_scorer(weights: str | Path) -> ClipScorer:
    """CLIP-T / CLIP-I with the mini CLIP (``weights/clip``: a transformers ``CLIPModel`` folder)."""
    return ClipScorer.from_pretrained(str(Path(weights) / "clip"))


def load_attribute_scorer(weights: str | Path) -> AttributeClassifier:
    return AttributeClassifier.from_pretrained(Path(weights) / "attributes").eval()


def semantic_scores(predicted: dict[str, str], named: dict[str, str]) -> dict[str, Any]:
    """Attribute accuracy of one image: the share of the prompt's semantic attributes that the classifier sees
    (``attr_acc``, ``None`` when the prompt names none), and 1/0 per named attribute (``attr_<name>``)."""
    checked = [k for k in SEMANTIC_ATTRIBUTES if k in named]
    scores: dict[str, Any] = {f"attr_{k}": float(predicted[k] == named[k]) for k in checked}
    scores["attr_acc"] = sum(scores[f"attr_{k}"] for k in checked) / len(checked) if checked else None
    scores["attr_named"] = checked
    scores["attr_predicted"] = {k: predicted[k] for k in SEMANTIC_ATTRIBUTES}
    return scores
