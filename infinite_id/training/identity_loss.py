"""Differentiable face encoders for the identity loss (``train.identity_loss_weight``), and a registry of them.

The identity loss (beyond the paper, as PuLID does) compares a face encoder's embedding of the image the model's
prediction implies with that of the target photo, and back-propagates through the encoder and the VAE decoder
into the adapter. The face encoders the project embeds with (InsightFace's ONNX ArcFace, dlib) are not
differentiable, so the loss takes its encoder from this registry: a torch port of an ArcFace for real training,
the miniature world's mini face encoder for the world (it registers ``mini``). A plugin registers one with
:func:`register_identity_encoder` or an entry point (see :mod:`infinite_id.plugins`)::

    [project.entry-points."infinite_id.identity_loss_encoders"]
    myarcface = "my_package.arcface_torch:ArcFaceLossEncoder"

An entry is a zero-argument factory (a class is one) of a :class:`DifferentiableFaceEncoder`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..plugins import PluginLoadError, PluginRegistry
from .config import ConfigError

__all__ = [
    "IDENTITY_ENCODER_GROUP",
    "IDENTITY_ENCODER_REGISTRY",
    "DifferentiableFaceEncoder",
    "face_box_crop",
    "identity_encoder_names",
    "load_identity_encoder",
    "register_identity_encoder",
]

IDENTITY_ENCODER_GROUP = "infinite_id.identity_loss_encoders"


@runtime_checkable
class DifferentiableFaceEncoder(Protocol):
    """Images and their face boxes -> identity embeddings, differentiable in the images.

    ``pixels`` is ``(B, 3, H, W)`` in [-1, 1]; ``face_boxes`` is ``(B, 4)``, (x0, y0, x1, y1) as fractions of
    the image (every box has an area: the loss leaves out samples without a face). Returns ``(B, D)``
    L2-normalised embeddings. The encoder does its own crop and alignment (:func:`face_box_crop` builds one) and
    must be frozen: the trainer never optimises it.
    """

    def __call__(self, pixels: torch.Tensor, face_boxes: torch.Tensor) -> torch.Tensor: ...


IdentityEncoderFactory = Callable[[], DifferentiableFaceEncoder]
IDENTITY_ENCODER_REGISTRY: PluginRegistry[IdentityEncoderFactory] = PluginRegistry(
    IDENTITY_ENCODER_GROUP, "identity-loss face encoder"
)


def register_identity_encoder(name: str, factory: IdentityEncoderFactory) -> None:
    """Make ``train.identity_loss_encoder=name`` build its encoder with ``factory()``."""
    IDENTITY_ENCODER_REGISTRY.register(name, factory)


def identity_encoder_names() -> tuple[str, ...]:
    """The registered encoders' names (nothing is imported)."""
    return IDENTITY_ENCODER_REGISTRY.names()


def unknown_encoder_problem(name: str | None) -> str | None:
    """Why ``name`` cannot serve as the identity-loss encoder (naming the choices), or None when it can."""
    if name and name in IDENTITY_ENCODER_REGISTRY:
        return None
    names = identity_encoder_names()
    choices = f"one of {', '.join(names)}" if names else "none is registered: register one (docs/training.md)"
    what = f"is {name!r}, which is not registered" if name else "is not set"
    return f"train.identity_loss_weight > 0 needs train.identity_loss_encoder, and it {what}; choose {choices}"


def load_identity_encoder(name: str, device: torch.device | str) -> DifferentiableFaceEncoder:
    """Build the encoder registered as ``name``, frozen (an ``nn.Module`` in eval mode) and on ``device``."""
    problem = unknown_encoder_problem(name)
    if problem:
        raise ConfigError(problem)
    try:
        encoder = IDENTITY_ENCODER_REGISTRY.get(name)()
    except (PluginLoadError, FileNotFoundError) as exc:
        raise ConfigError(f"the identity-loss face encoder {name!r} cannot be built: {exc}") from exc
    if isinstance(encoder, torch.nn.Module):
        encoder = encoder.requires_grad_(False).eval().to(device)
    return encoder


def face_box_crop(
    pixels: torch.Tensor,
    face_boxes: torch.Tensor,
    size: int,
    box_in_crop: Sequence[float] = (0.0, 0.0, 1.0, 1.0),
) -> torch.Tensor:
    """A differentiable, upright square crop around each face box, resized to ``size`` x ``size``: ``(B, 3, S, S)``.

    The crop is placed so that the box lands on ``box_in_crop`` (fractions of the crop, as a face encoder's
    template puts the face: an aligned crop has a margin around the detector's box); its side is the larger of
    the two that the box's width and height imply, so a box clipped at the image border does not shrink the
    crop. Without landmarks there is no roll correction. Bilinear ``grid_sample`` (zeros outside the image) at a
    multiple of ``size``, then average pooling: a large face is not aliased by the downsampling.
    """
    _, _, height, width = pixels.shape
    boxes = face_boxes.to(pixels.device, torch.float32)
    cx0, cy0, cx1, cy1 = (float(v) for v in box_in_crop)
    box_w, box_h = (boxes[:, 2] - boxes[:, 0]) * width, (boxes[:, 3] - boxes[:, 1]) * height
    side = torch.maximum(box_w / (cx1 - cx0), box_h / (cy1 - cy0))  # pixels of the image per crop side
    left = (boxes[:, 0] + boxes[:, 2]) / 2 * width - side * (cx0 + cx1) / 2
    top = (boxes[:, 1] + boxes[:, 3]) / 2 * height - side * (cy0 + cy1) / 2
    factor = max(1, math.ceil(float(side.max()) / size)) if boxes.shape[0] else 1
    steps = (torch.arange(size * factor, device=pixels.device, dtype=torch.float32) + 0.5) / (size * factor)
    xs = (left[:, None] + side[:, None] * steps) * (2 / width) - 1  # align_corners=False normalisation
    ys = (top[:, None] + side[:, None] * steps) * (2 / height) - 1
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    crops = F.grid_sample(pixels, grid.to(pixels.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(crops, factor) if factor > 1 else crops
