"""Mappers that turn frozen encoder features into ID tokens of the UNet's cross-attention width.

Paper (Fig. 2): ``c_id = Concat(M_clip(E_clip(FA(x))), M_face(E_face(FA(x))))``. The paper does not give the
mapper designs; the defaults follow its implementation spec: a per-token linear CLIP mapper that keeps every
CLIP token (257 for ViT-H/14 at 224 px) and an MLP face mapper that expands one face-recognition vector into
``num_tokens`` tokens. A perceiver resampler is offered as a compact alternative for the CLIP branch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

ClipMapperKind = Literal["linear", "mlp", "resampler"]

__all__ = [
    "ClipTokenMapper",
    "FaceEmbeddingMapper",
    "IdentityProjection",
    "IdentityProjectionConfig",
    "PerceiverResampler",
]


class FaceEmbeddingMapper(nn.Module):
    """Face mapper: one face-recognition vector (512-d ArcFace, 128-d dlib, ...) to ``num_tokens`` tokens.

    ``Linear(face_dim, hidden) -> GELU -> Linear(hidden, num_tokens * out_dim) -> reshape -> LayerNorm``, the
    design IP-Adapter-FaceID uses for ArcFace vectors.
    """

    def __init__(self, face_dim: int, out_dim: int, num_tokens: int = 4, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 2 * face_dim
        self.num_tokens = num_tokens
        self.out_dim = out_dim
        self.proj = nn.Sequential(
            nn.Linear(face_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_tokens * out_dim)
        )
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, face_embeds: torch.Tensor) -> torch.Tensor:
        """``(batch, face_dim)`` -> ``(batch, num_tokens, out_dim)``."""
        tokens = self.proj(face_embeds).reshape(face_embeds.shape[0], self.num_tokens, self.out_dim)
        return self.norm(tokens)


class ClipTokenMapper(nn.Module):
    """CLIP mapper that projects every CLIP hidden-state token on its own (token count is kept).

    ``kind="linear"``: ``Linear + LayerNorm``; ``kind="mlp"``: ``Linear -> GELU -> Linear + LayerNorm``.
    """

    def __init__(self, clip_dim: int, out_dim: int, kind: Literal["linear", "mlp"] = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.proj = nn.Linear(clip_dim, out_dim)
        elif kind == "mlp":
            self.proj = nn.Sequential(nn.Linear(clip_dim, clip_dim), nn.GELU(), nn.Linear(clip_dim, out_dim))
        else:
            raise ValueError(f"unknown ClipTokenMapper kind {kind!r}")
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, clip_hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, clip_dim)`` -> ``(batch, tokens, out_dim)``."""
        return self.norm(self.proj(clip_hidden))


class _PerceiverLayer(nn.Module):
    """Latents attend over ``[features; latents]``, then a feed-forward block; both residual."""

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim)
        )

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)
        kv = torch.cat([self.norm_x(x), q], dim=1)
        latents = latents + self.attn(q, kv, kv, need_weights=False)[0]
        return latents + self.ff(latents)


class PerceiverResampler(nn.Module):
    """Compact CLIP mapper: ``num_queries`` learned latents read the CLIP tokens through cross-attention."""

    def __init__(
        self,
        clip_dim: int,
        out_dim: int,
        num_queries: int = 16,
        dim: int | None = None,
        depth: int = 4,
        heads: int = 8,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        dim = dim or out_dim
        if dim % heads:
            raise ValueError(f"resampler width {dim} is not divisible by {heads} heads")
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(clip_dim, dim)
        self.layers = nn.ModuleList(_PerceiverLayer(dim, heads, ff_mult) for _ in range(depth))
        self.proj_out = nn.Linear(dim, out_dim)
        self.norm_out = nn.LayerNorm(out_dim)

    def forward(self, clip_hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, clip_dim)`` -> ``(batch, num_queries, out_dim)``."""
        x = self.proj_in(clip_hidden)
        latents = self.latents.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(x, latents)
        return self.norm_out(self.proj_out(latents))


@dataclass
class IdentityProjectionConfig:
    """Everything needed to rebuild an :class:`IdentityProjection`; stored in adapter metadata.

    ``clip_num_tokens`` is the CLIP encoder's sequence length (patches + CLS), used to count ID tokens.
    """

    cross_attention_dim: int
    face_dim: int = 512
    clip_dim: int = 1280
    clip_num_tokens: int = 257
    face_num_tokens: int = 4
    face_hidden_dim: int | None = None
    clip_mapper: ClipMapperKind = "linear"
    resampler_queries: int = 16
    resampler_depth: int = 4
    resampler_heads: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clip_tokens_out(self) -> int:
        return self.resampler_queries if self.clip_mapper == "resampler" else self.clip_num_tokens

    @property
    def num_id_tokens(self) -> int:
        """ID tokens per reference photo: CLIP tokens then face tokens."""
        return self.clip_tokens_out + self.face_num_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityProjectionConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class IdentityProjection(nn.Module):
    """Both trainable mappers; ``forward`` gives ``c_id = [M_clip(clip_hidden); M_face(face_embeds)]``."""

    def __init__(self, config: IdentityProjectionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.cross_attention_dim
        if config.clip_mapper == "resampler":
            heads = config.resampler_heads
            self.clip_mapper: nn.Module = PerceiverResampler(
                config.clip_dim, d, config.resampler_queries, depth=config.resampler_depth, heads=heads
            )
        else:
            self.clip_mapper = ClipTokenMapper(config.clip_dim, d, kind=config.clip_mapper)
        self.face_mapper = FaceEmbeddingMapper(config.face_dim, d, config.face_num_tokens, config.face_hidden_dim)

    def forward(self, clip_hidden: torch.Tensor, face_embeds: torch.Tensor) -> torch.Tensor:
        """``(B, T, clip_dim)`` and ``(B, face_dim)`` -> ID tokens ``(B, num_id_tokens, cross_attention_dim)``."""
        if clip_hidden.shape[-1] != self.config.clip_dim:
            raise ValueError(
                f"CLIP features have width {clip_hidden.shape[-1]}, but this adapter's CLIP mapper expects "
                f"{self.config.clip_dim}: use the image encoder the adapter was trained with"
            )
        if face_embeds.shape[-1] != self.config.face_dim:
            raise ValueError(
                f"face embedding has {face_embeds.shape[-1]} dimensions, but this adapter's face mapper expects "
                f"{self.config.face_dim}: use the face encoder the adapter was trained with"
            )
        return torch.cat([self.clip_mapper(clip_hidden), self.face_mapper(face_embeds)], dim=1)
