"""The miniature model as the core's default model: registered with :mod:`infinite_id.defaults` by entry point.

The core asks its registry of default models (group ``infinite_id.default_models`` in ``pyproject.toml``) instead
of importing the world, so the core runs, and its tests pass, without ``world/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..defaults import LoadedModel, load_model
from ..faces.base import FaceEncoderInfo
from .models.weights import resolve_weights_dir, shipped_weights_available

__all__ = [
    "MINIATURE_ADAPTER_STAGE",
    "MINIATURE_DESCRIPTION",
    "MINIATURE_MODEL",
    "MiniatureModel",
    "load_miniature_model",
]

MINIATURE_DESCRIPTION = (
    "miniature model (64 px, trained from scratch on the miniature world's portraits; identity-enhanced adapter; "
    "face backend 'mini'; see docs/world.md)"
)
MINIATURE_ADAPTER_STAGE = "adapter_identity_enhanced"


def load_miniature_model(
    weights: str | os.PathLike | None = None,
    adapter_stage: str = MINIATURE_ADAPTER_STAGE,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[LoadedModel, FaceEncoderInfo]:
    """The miniature base model with one of its adapters (``adapter_identity_enhanced`` or ``adapter_joint``)."""
    root = resolve_weights_dir(weights)
    loaded, face_encoder = load_model(
        root / "base", root / adapter_stage / "adapter.safetensors", device=device, dtype=dtype
    )
    loaded.name = "miniature"
    loaded.description = (
        MINIATURE_DESCRIPTION
        if adapter_stage == MINIATURE_ADAPTER_STAGE
        else f"{MINIATURE_DESCRIPTION} [{adapter_stage}]"
    )
    return loaded, face_encoder


@dataclass(frozen=True)
class MiniatureModel:
    """The shipped miniature weights as a :class:`~infinite_id.defaults.DefaultModelProvider`."""

    name: str = "miniature"
    description: str = MINIATURE_DESCRIPTION
    face_backend: str = "mini"

    def available(self) -> bool:
        """Whether the shipped weights hold every stage (a trimmed install may lack them)."""
        return shipped_weights_available()

    def load(
        self, device: str = "cpu", dtype: torch.dtype = torch.float32, **options: Any
    ) -> tuple[LoadedModel, FaceEncoderInfo]:
        """Options: ``weights`` (a weights folder instead of the shipped one) and ``adapter_stage``."""
        return load_miniature_model(device=device, dtype=dtype, **options)


MINIATURE_MODEL = MiniatureModel()
