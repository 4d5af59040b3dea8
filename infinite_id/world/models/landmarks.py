"""The miniature world's face detector: five landmarks and a face-presence score from a 64x64 image.

Generated images come without a layout, so the world's face pipeline (alignment for the face encoder and the
identity metric) needs a detector. This one regresses the five ArcFace-order landmarks (left eye, right eye,
nose tip, left and right mouth corner; pixel-index coordinates) and a logit for "there is a face". It is
trained on renders, with face-free scenes as negatives (:mod:`infinite_id.world.trainers.train_landmarks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .attributes import images_to_tensor
from .small_cnn import ResidualBackbone, SavableModel


@dataclass(frozen=True)
class LandmarkDetectorConfig:
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    grid: int = 4


@dataclass(frozen=True)
class DetectedLandmarks:
    landmarks: np.ndarray  # (5, 2) in pixels
    face_probability: float


class LandmarkDetector(SavableModel):
    """Image (B, 3, S, S) in [-1, 1] -> (landmarks (B, 5, 2) as fractions of the image side, face logit (B,))."""

    model_type = "infinite-id-mini-landmarks"
    config_class = LandmarkDetectorConfig

    def __init__(self, config: LandmarkDetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or LandmarkDetectorConfig()
        self.backbone = ResidualBackbone(self.config.channels, grid=self.config.grid)
        self.head = nn.Sequential(nn.Linear(self.backbone.out_features, 256), nn.ReLU(), nn.Linear(256, 11))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.backbone(pixels))
        return 0.5 + out[:, :10].view(-1, 5, 2), out[:, 10]

    @torch.no_grad()
    def detect(self, images: list[Image.Image]) -> list[DetectedLandmarks]:
        """Landmarks in pixels of each image (resized to the detector's input if needed) and P(face)."""
        was_training = self.training
        self.eval()
        size = self.config.image_size
        resized = [im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR) for im in images]
        points, logits = self(images_to_tensor(resized))
        self.train(was_training)
        results = []
        for image, p, logit in zip(images, points.numpy(), torch.sigmoid(logits).tolist(), strict=True):
            scale = np.array(image.size, dtype=np.float64)
            # fractions of the side in pixel-index coordinates: x_pixels = fraction * side - 0.5
            results.append(DetectedLandmarks(landmarks=p.astype(np.float64) * scale - 0.5, face_probability=logit))
        return results
