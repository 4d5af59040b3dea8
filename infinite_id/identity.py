"""From reference photos to ID tokens: the frozen CLIP image encoder, the trainable projection, and the
ways to combine identities (several photos of one person, interpolation between two people)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image

from .models.projectors import IdentityProjection

MultiImageMode = Literal["concat", "mean"]

__all__ = [
    "IdentityEncoder",
    "IdentityFeatures",
    "MultiImageMode",
    "combine_tokens",
    "execution_device",
    "interpolate_identities",
    "load_image_encoder",
]


@dataclass
class IdentityFeatures:
    """Frozen-encoder outputs for ``n`` reference photos of one identity.

    ``face_embeds`` is ``(n, face_dim)`` (ArcFace, dlib, ...); ``clip_hidden`` is ``(n, tokens, clip_dim)``, the
    chosen hidden layer of the CLIP vision model on the aligned face crops. Both can be cached and reused.
    """

    face_embeds: torch.Tensor
    clip_hidden: torch.Tensor

    def __post_init__(self) -> None:
        if self.face_embeds.ndim == 1:
            self.face_embeds = self.face_embeds[None]
        if self.clip_hidden.ndim == 2:
            self.clip_hidden = self.clip_hidden[None]
        if self.face_embeds.shape[0] != self.clip_hidden.shape[0]:
            raise ValueError(
                f"{self.face_embeds.shape[0]} face embeddings but {self.clip_hidden.shape[0]} CLIP feature sets: "
                "give one of each per reference photo"
            )

    def __len__(self) -> int:
        return self.face_embeds.shape[0]


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: its offload hook's device under diffusers' model or sequential CPU offload
    (the weights then wait on the CPU, or on the meta device, until the hook loads them), else its weights'."""
    for sub in module.modules():
        device = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return next(module.parameters()).device


class IdentityEncoder:
    """Runs the frozen CLIP vision model and the trainable :class:`IdentityProjection`.

    Args:
        image_encoder: a transformers CLIP vision model (``CLIPVisionModel`` or ``...WithProjection``).
        feature_extractor: its ``CLIPImageProcessor``.
        projection: the adapter's mappers.
        clip_layer: which ``hidden_states`` entry feeds the CLIP mapper (-1: the last layer, as the paper says;
            -2: the penultimate, as IP-Adapter-Plus).
    """

    def __init__(self, image_encoder, feature_extractor, projection: IdentityProjection, clip_layer: int = -1):
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor
        self.projection = projection
        self.clip_layer = clip_layer

    def _encoder_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.image_encoder.parameters())
        return execution_device(self.image_encoder), p.dtype

    @torch.no_grad()
    def clip_hidden(self, crops: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """CLIP hidden states ``(n, tokens, clip_dim)`` of aligned face crops (PIL images or pixel values)."""
        device, dtype = self._encoder_device_dtype()
        if isinstance(crops, torch.Tensor):
            pixels = crops
        else:
            pixels = self.feature_extractor(images=list(crops), return_tensors="pt").pixel_values
        out = self.image_encoder(pixels.to(device=device, dtype=dtype), output_hidden_states=True)
        return out.hidden_states[self.clip_layer]

    def features(self, crops: Sequence[Image.Image], face_embeds: torch.Tensor) -> IdentityFeatures:
        return IdentityFeatures(face_embeds=torch.as_tensor(face_embeds), clip_hidden=self.clip_hidden(crops))

    def tokens(self, features: IdentityFeatures) -> torch.Tensor:
        """ID tokens ``(n, num_id_tokens, cross_attention_dim)``, one set per reference photo."""
        p = next(self.projection.parameters())
        return self.projection(
            features.clip_hidden.to(device=p.device, dtype=p.dtype),
            features.face_embeds.to(device=p.device, dtype=p.dtype),
        )

    def unconditional_features(self, n: int = 1) -> IdentityFeatures:
        """The "no identity" input for classifier-free guidance: a zero face vector and CLIP of a blank
        (all-zero, i.e. mean-colour after normalisation) image, as IP-Adapter does."""
        size = self.feature_extractor.crop_size
        h, w = (size, size) if isinstance(size, int) else (int(size["height"]), int(size["width"]))
        device, dtype = self._encoder_device_dtype()
        blank = torch.zeros(1, 3, h, w, device=device, dtype=dtype)
        clip = self.clip_hidden(blank).expand(n, -1, -1)
        face = torch.zeros(n, self.projection.config.face_dim, device=clip.device, dtype=clip.dtype)
        return IdentityFeatures(face_embeds=face, clip_hidden=clip)


def combine_tokens(tokens: torch.Tensor, mode: MultiImageMode = "concat") -> torch.Tensor:
    """Merge the ID tokens of several photos of one person into one conditioning ``(1, tokens, dim)``.

    ``"concat"`` stacks all photos' tokens on the token axis (the paper); ``"mean"`` averages them, which
    keeps the token count (and the cost) of a single photo.
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected (photos, tokens, dim), got {tuple(tokens.shape)}")
    if mode == "concat":
        return tokens.reshape(1, -1, tokens.shape[-1])
    if mode == "mean":
        return tokens.mean(dim=0, keepdim=True)
    raise ValueError(f"multi-image mode must be 'concat' or 'mean', got {mode!r}")


def interpolate_identities(tokens_a: torch.Tensor, tokens_b: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * a + (1 - weight) * b``: identity mixing as on the paper's project page (80/20, 50/50, ...)."""
    if tokens_a.shape != tokens_b.shape:
        raise ValueError(
            f"cannot interpolate identities with different token shapes {tuple(tokens_a.shape)} and "
            f"{tuple(tokens_b.shape)}: use the same number of photos and mode for both"
        )
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"interpolation weight must be in [0, 1], got {weight}")
    return weight * tokens_a + (1.0 - weight) * tokens_b


def load_image_encoder(image_encoder: Any = None, feature_extractor: Any = None, current: tuple = (None, None)):
    """The CLIP image encoder and processor an adapter reads: ``image_encoder`` (a transformers model, or its folder
    / hub id, loaded here with the processor saved beside it), or ``None`` for the ``current`` pair (the
    pipeline's). An encoder without a processor gets CLIP's own preprocessing at its input size."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    current_encoder, current_extractor = current
    if isinstance(image_encoder, (str, os.PathLike)):
        source = image_encoder
        try:
            image_encoder = CLIPVisionModelWithProjection.from_pretrained(source)
        except OSError as exc:
            raise FileNotFoundError(f"cannot load a CLIP image encoder from {source}: {exc}") from exc
        if feature_extractor is None:
            try:
                feature_extractor = CLIPImageProcessor.from_pretrained(source)
            except OSError:
                feature_extractor = _clip_preprocessing(image_encoder)
    if image_encoder is None:
        image_encoder = current_encoder
    if feature_extractor is None:
        feature_extractor = current_extractor
    if image_encoder is not None and feature_extractor is None:
        feature_extractor = _clip_preprocessing(image_encoder)
    return image_encoder, feature_extractor


def _clip_preprocessing(image_encoder: Any) -> Any:
    """CLIP's own preprocessing (resize, centre crop, CLIP mean/std) at the encoder's input size."""
    from transformers import CLIPImageProcessor

    size = image_encoder.config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)
