"""The mini face-recognition encoder of the miniature world: the ArcFace analogue.

A small residual CNN maps an aligned face crop to an L2-normalised embedding (512-d by default, like ArcFace).
It is trained with an additive angular margin loss over training identities (see
:mod:`infinite_id.world.trainers.train_face`); a second, independently seeded copy serves only as the evaluation
metric.
Weights are stored as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...faces.alignment import arcface_template, estimate_similarity, warp_affine
from .small_cnn import CONFIG_NAME, WEIGHTS_NAME, ResidualBackbone, SavableModel

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FaceEncoderConfig",
    "MiniFaceEncoder",
    "align_world_face",
    "crops_to_tensor",
    "world_face_template",
]


@dataclass(frozen=True)
class FaceEncoderConfig:
    input_size: int = 40  # side of the aligned face crop
    channels: tuple[int, ...] = (16, 32, 64, 128)
    embedding_dim: int = 512


def world_face_template(size: int) -> np.ndarray:
    """Five-point template of the mini face crop: the ArcFace template shrunk to 75% and lowered a little,
    so the crop keeps the hair and the jaw line (both are identity in the miniature world)."""
    centre = np.array([size / 2.0, size / 2.0])
    return centre + (arcface_template(size) - centre) * 0.75 + np.array([0.0, 0.03 * size])


def align_world_face(image: Image.Image, landmarks, size: int = 40) -> Image.Image:
    """The aligned face crop the mini face encoder reads, from five landmarks (pixel-index coordinates)."""
    matrix = estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), world_face_template(size))
    return warp_affine(image.convert("RGB"), matrix, (size, size))


def crops_to_tensor(crops: list[Image.Image]) -> torch.Tensor:
    """PIL crops -> float tensor (B, 3, S, S) in [-1, 1]."""
    array = np.stack([np.asarray(c, dtype=np.uint8) for c in crops])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().float().div(127.5).sub(1.0)


class MiniFaceEncoder(SavableModel):
    """Aligned face crop (B, 3, S, S) in [-1, 1] -> unit-norm identity embedding (B, embedding_dim)."""

    model_type = "infinite-id-mini-face"
    config_class = FaceEncoderConfig

    def __init__(self, config: FaceEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or FaceEncoderConfig()
        self.backbone = ResidualBackbone(self.config.channels)
        self.head = nn.Linear(self.backbone.out_features, self.config.embedding_dim)
        self.norm = nn.BatchNorm1d(self.config.embedding_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.head(self.backbone(pixels))), dim=-1)
