"""Projection modules of the IP-Adapter family, written from their published shapes, so that existing face weights
(ip-adapter-plus-face, ip-adapter-full-face, IP-Adapter-FaceID, FaceID-Plus / PlusV2) drive Infinite-ID's identity
stream.

Each module's parameter names are the ones in the released ``image_proj`` state dicts, so the weights load with
``load_state_dict(strict=True)``. Every module has the same call as our
:class:`~infinite_id.models.projectors.IdentityProjection`: ``forward(clip_features, face_embeds) -> tokens``; an
input the family does not use is ignored. Which CLIP features a family reads (penultimate hidden states, or the
pooled image embedding) is stated by :attr:`clip_input`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

IPAdapterKind = Literal["plain", "plus", "full", "faceid", "faceid-plus"]
ClipInput = Literal["hidden", "pooled", "none"]

__all__ = [
    "FaceIDPlusProjection",
    "FaceIDProjection",
    "FullFaceProjection",
    "IPAdapterKind",
    "IPAdapterProjectionConfig",
    "PlainImageProjection",
    "ResamplerProjection",
    "build_ip_adapter_projection",
]

#: The head width of every perceiver attention in the IP-Adapter family.
PERCEIVER_HEAD_DIM = 64


@dataclass
class IPAdapterProjectionConfig:
    """Sizes of an IP-Adapter projection, read from the shapes of its weights (see ``loaders.ip_adapter``)."""

    kind: IPAdapterKind
    cross_attention_dim: int
    clip_dim: int = 0
    face_dim: int = 0
    num_tokens: int = 4
    width: int = 0
    depth: int = 0
    heads: int = 0
    ff_mult: int = 4
    hidden_dim: int = 0
    shortcut: bool = False
    shortcut_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _PerceiverAttention(nn.Module):
    """Latents attend over ``[features; latents]``. Parameter names: ``norm1``, ``norm2``, ``to_q``, ``to_kv``,
    ``to_out`` (no biases), as in the released weights."""

    def __init__(self, dim: int, heads: int, head_dim: int = PERCEIVER_HEAD_DIM) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features, latents = self.norm1(features), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, x.shape[1], self.heads, self.head_dim).transpose(1, 2)

        # Plain scaled dot-product attention; the softmax runs in float32 as in the original.
        scores = heads(q) @ heads(k).transpose(-1, -2) * self.head_dim**-0.5
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (weights @ heads(v)).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    """``LayerNorm -> Linear -> GELU -> Linear`` without biases (keys ``0``, ``1``, ``3``)."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


def _add_perceiver(module: nn.Module, in_dim: int, width: int, out_dim: int, depth: int, heads: int, ff: int) -> None:
    """Give ``module`` the perceiver's parameters under the released names: ``proj_in``, ``layers.{i}.0``
    (attention), ``layers.{i}.1`` (feed-forward), ``proj_out``, ``norm_out``."""
    module.proj_in = nn.Linear(in_dim, width)
    module.layers = nn.ModuleList(
        nn.ModuleList([_PerceiverAttention(width, heads), _feed_forward(width, ff)]) for _ in range(depth)
    )
    module.proj_out = nn.Linear(width, out_dim)
    module.norm_out = nn.LayerNorm(out_dim)


def _perceive(module: nn.Module, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """``proj_in`` -> ``depth`` x (attention + feed-forward, both residual) -> ``proj_out`` -> ``norm_out``."""
    features = module.proj_in(features)
    for attention, feed_forward in module.layers:
        latents = latents + attention(features, latents)
        latents = latents + feed_forward(latents)
    return module.norm_out(module.proj_out(latents))


class _PerceiverStack(nn.Module):
    """The perceiver of FaceID-Plus, registered as its own sub-module (``perceiver_resampler.*``)."""

    def __init__(self, in_dim: int, width: int, out_dim: int, depth: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        _add_perceiver(self, in_dim, width, out_dim, depth, heads, ff_mult)

    def resample(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return _perceive(self, features, latents)


class _Projection(nn.Module):
    clip_input: ClipInput = "hidden"
    uses_face: bool = False

    def __init__(self, config: IPAdapterProjectionConfig) -> None:
        super().__init__()
        self.config = config

    def _check(self, clip: torch.Tensor | None, face: torch.Tensor | None) -> None:
        if self.clip_input != "none" and clip is not None and clip.shape[-1] != self.config.clip_dim:
            raise ValueError(
                f"CLIP features have width {clip.shape[-1]}, but this {self.config.kind} adapter expects "
                f"{self.config.clip_dim}: use the image encoder it was trained with"
            )
        if self.uses_face and face is not None and face.shape[-1] != self.config.face_dim:
            raise ValueError(
                f"face embedding has {face.shape[-1]} dimensions, but this {self.config.kind} adapter expects "
                f"{self.config.face_dim} (InsightFace ArcFace)"
            )


class PlainImageProjection(_Projection):
    """IP-Adapter (``ImageProjModel``): the pooled CLIP image embedding -> ``Linear`` -> tokens -> ``LayerNorm``."""

    clip_input = "pooled"

    def __init__(self, config: IPAdapterProjectionConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.clip_dim, config.num_tokens * config.cross_attention_dim)
        self.norm = nn.LayerNorm(config.cross_attention_dim)

    def forward(self, clip_features: torch.Tensor, face_embeds: torch.Tensor | None = None) -> torch.Tensor:
        self._check(clip_features, None)
        pooled = clip_features.reshape(clip_features.shape[0], -1)
        tokens = self.proj(pooled).reshape(-1, self.config.num_tokens, self.config.cross_attention_dim)
        return self.norm(tokens)


class ResamplerProjection(_Projection):
    """IP-Adapter-Plus / Plus-Face (``Resampler``): learned latents read the CLIP penultimate hidden states."""

    def __init__(self, config: IPAdapterProjectionConfig) -> None:
        super().__init__(config)
        c = config
        self.latents = nn.Parameter(torch.randn(1, c.num_tokens, c.width) / c.width**0.5)
        # The perceiver sits at the top level here (proj_in, layers, ...), as in the weight files.
        _add_perceiver(self, c.clip_dim, c.width, c.cross_attention_dim, c.depth, c.heads, c.ff_mult)

    def forward(self, clip_features: torch.Tensor, face_embeds: torch.Tensor | None = None) -> torch.Tensor:
        self._check(clip_features, None)
        return _perceive(self, clip_features, self.latents.expand(clip_features.shape[0], -1, -1))


class FullFaceProjection(_Projection):
    """IP-Adapter-Full-Face (``MLPProjModel`` of ip_adapter.py): every CLIP hidden-state token through
    ``Linear -> GELU -> Linear -> LayerNorm``."""

    def __init__(self, config: IPAdapterProjectionConfig) -> None:
        super().__init__(config)
        d = config.cross_attention_dim
        self.proj = nn.Sequential(
            nn.Linear(config.clip_dim, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, d), nn.LayerNorm(d)
        )

    def forward(self, clip_features: torch.Tensor, face_embeds: torch.Tensor | None = None) -> torch.Tensor:
        self._check(clip_features, None)
        return self.proj(clip_features)


class FaceIDProjection(_Projection):
    """IP-Adapter-FaceID (``MLPProjModel`` of ip_adapter_faceid.py): an ArcFace vector -> ``Linear -> GELU ->
    Linear`` -> ``num_tokens`` tokens -> ``LayerNorm``. No CLIP."""

    clip_input = "none"
    uses_face = True

    def __init__(self, config: IPAdapterProjectionConfig) -> None:
        super().__init__(config)
        self.proj = nn.Sequential(
            nn.Linear(config.face_dim, config.hidden_dim),
            nn.GELU(),
            nn.Linear(config.hidden_dim, config.num_tokens * config.cross_attention_dim),
        )
        self.norm = nn.LayerNorm(config.cross_attention_dim)

    def face_tokens(self, face_embeds: torch.Tensor) -> torch.Tensor:
        self._check(None, face_embeds)
        tokens = self.proj(face_embeds).reshape(-1, self.config.num_tokens, self.config.cross_attention_dim)
        return self.norm(tokens)

    def forward(self, clip_features: torch.Tensor | None, face_embeds: torch.Tensor) -> torch.Tensor:
        return self.face_tokens(face_embeds)


class FaceIDPlusProjection(FaceIDProjection):
    """IP-Adapter-FaceID-Plus / PlusV2 (``ProjPlusModel``): the FaceID tokens are the latents of a perceiver
    (``perceiver_resampler``) over the CLIP penultimate hidden states of the aligned face crop. PlusV2 adds the
    shortcut ``tokens + shortcut_scale * perceiver(tokens)``; V1 returns the perceiver's output alone."""

    clip_input = "hidden"

    def __init__(self, config: IPAdapterProjectionConfig) -> None:
        super().__init__(config)
        d = config.cross_attention_dim
        self.perceiver_resampler = _PerceiverStack(config.clip_dim, d, d, config.depth, config.heads, config.ff_mult)

    def forward(self, clip_features: torch.Tensor, face_embeds: torch.Tensor) -> torch.Tensor:
        self._check(clip_features, face_embeds)
        tokens = self.face_tokens(face_embeds)
        out = self.perceiver_resampler.resample(clip_features, tokens)
        return tokens + self.config.shortcut_scale * out if self.config.shortcut else out


_CLASSES: dict[str, type[_Projection]] = {
    "plain": PlainImageProjection,
    "plus": ResamplerProjection,
    "full": FullFaceProjection,
    "faceid": FaceIDProjection,
    "faceid-plus": FaceIDPlusProjection,
}


def build_ip_adapter_projection(config: IPAdapterProjectionConfig) -> nn.Module:
    """The projection module for ``config.kind``."""
    try:
        return _CLASSES[config.kind](config)
    except KeyError:
        raise ValueError(f"unknown IP-Adapter kind {config.kind!r}; known: {', '.join(_CLASSES)}") from None
