"""The ``mini`` identity-loss encoder: the miniature world's face encoder, differentiable, on face boxes.

The world registers it with the core as ``train.identity_loss_encoder=mini`` (an entry point in
``pyproject.toml``; the core never imports it). It is the frozen
:class:`~infinite_id.world.models.face_model.MiniFaceEncoder` that the adapters' face embeddings come from, read
on the aligned 40 px crop it was trained on.

The encoder was trained on crops aligned by five landmarks (:func:`~infinite_id.world.models.face_model.
align_world_face`; :func:`~infinite_id.world.trainers.train_vae.face_sampling_grid` is its differentiable twin),
but a training batch carries only face boxes. The crop is rebuilt from the box by inverting how the ``mini``
face backend derives its box from the landmarks: the box is the crop frame's face region
(:data:`~infinite_id.world.face_backend.FACE_BOX_IN_CROP`) placed at the landmarks' position and scale, upright.
So for a box from ``train-prepare`` with the ``mini`` analyzer the rebuilt crop has the aligned crop's centre
and scale (to within a pixel; less where the box was clipped at the image border), and it differs only by the
head's roll, which a box does not record: on 16 renders its embedding's cosine with the aligned crop's is 0.91 on
average (0.83 to 0.98; other identities: about 0). For a renderer's face box (a manifest's ``face_box``) the frame
is only the median one, so the crop is off by that box's spread around it: cosine 0.74 on average (0.22 to 0.96).
Prefer caches prepared with the ``mini`` analyzer for this loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..training.identity_loss import face_box_crop, register_identity_encoder
from .face_backend import ENCODER_STAGES, FACE_BOX_IN_CROP

__all__ = ["MiniIdentityLossEncoder"]


class MiniIdentityLossEncoder(nn.Module):
    """Images in [-1, 1] and face boxes (fractions) -> the mini face encoder's unit-norm embeddings, differentiably.

    Args:
        weights_dir: the world's weights folder (default: the shipped weights); needs the ``encoder`` stage.
        encoder: ``"face_encoder"`` (default: the encoder the adapters' face embeddings come from) or
            ``"face_encoder_eval"`` (the identity metric's; training on it would game the metric).
    """

    def __init__(self, weights_dir: str | Path | None = None, encoder: str = "face_encoder") -> None:
        super().__init__()
        from .models.face_model import MiniFaceEncoder
        from .models.weights import resolve_weights_dir

        if encoder not in ENCODER_STAGES:
            raise ValueError(f"Unknown mini face encoder {encoder!r}; choose one of {', '.join(ENCODER_STAGES)}.")
        root = resolve_weights_dir(weights_dir, stages=(encoder,))
        self.encoder = MiniFaceEncoder.from_pretrained(root / encoder).eval().requires_grad_(False)
        side = self.encoder.config.input_size
        # FACE_BOX_IN_CROP is in pixel-index coordinates of the crop; face_box_crop places pixel edges.
        self.box_in_crop = tuple(v + 0.5 / side for v in FACE_BOX_IN_CROP)

    def train(self, mode: bool = True) -> MiniIdentityLossEncoder:  # frozen: BatchNorm keeps its statistics
        return self

    def forward(self, pixels: torch.Tensor, face_boxes: torch.Tensor) -> torch.Tensor:
        crops = face_box_crop(pixels.float(), face_boxes, self.encoder.config.input_size, self.box_in_crop)
        return self.encoder(crops)


# The entry point in pyproject.toml finds this encoder without importing the world; registering here as well keeps
# "mini" known to world code run from a checkout whose installed metadata predates the entry point.
register_identity_encoder("mini", MiniIdentityLossEncoder)
