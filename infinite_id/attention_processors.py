"""Swappable diffusers attention processors for the two Infinite-ID streams.

One UNet call carries both streams. The batch is laid out as ``[text rows | identity rows]`` (with
classifier-free guidance: text-uncond, text-cond, id-uncond, id-cond), and identity row ``i`` is paired with
text row ``i``. What a call should do travels in an :class:`InfiniteIDAttentionState`, passed to the UNet as
``cross_attention_kwargs={"infinite_id": state}``; without it the processors behave exactly like diffusers'
default SDPA processor, so the patched UNet is still the base model.

* :class:`InfiniteIDSelfAttnProcessor` replaces every self-attention (``attn1``). Text rows: plain
  self-attention. Identity rows: mixed attention (``ops.mixed_attention``), mutual attention, or plain.
* :class:`InfiniteIDCrossAttnProcessor` replaces every text cross-attention (``attn2``) and adds the image
  cross-attention ``to_k_ip``/``to_v_ip`` on the ID tokens: ``Attn(Q, K_t, V_t) + scale * Attn(Q, K_id, V_id)``
  for identity rows; in identity-enhanced training the text term is switched off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .controls import AdaIN, SelfAttentionMode, check_applied_adain, check_self_attention

__all__ = [
    "AdaIN",
    "InfiniteIDAttentionState",
    "InfiniteIDCrossAttnProcessor",
    "InfiniteIDSelfAttnProcessor",
    "SelfAttentionMode",
    "configure_blocks",
    "cross_attention_processors",
    "install_processors",
    "is_installed",
    "processor_module_list",
    "uninstall_processors",
]


@dataclass
class InfiniteIDAttentionState:
    """What one UNet call asks of the processors.

    Args:
        text_rows: number of leading batch rows that belong to the text stream (0: no text stream, as in
            training or the identity-stream-only ablation). When positive, the remaining rows are the
            identity stream and there must be exactly as many of them.
        id_tokens: ``(identity_rows, num_id_tokens, cross_attention_dim)`` ID tokens for the identity rows
            (``None``: no image cross-attention in this call).
        id_scale: weight of the image cross-attention (0 skips it).
        self_attention: what the identity rows' self-attention does this step: ``"mixed"`` (the paper),
            ``"mutual"`` (MasaCtrl ablation) or ``"independent"`` (plain self-attention).
        adain: ``"off"``, ``"mean"`` (AdaIN-mean, the paper) or ``"full"`` (ablation), applied in mixed
            attention (``False``/``True`` are read as off/mean, see :mod:`infinite_id.controls`).
        text_cross_attention: ``False`` switches the identity rows' text cross-attention off
            (identity-enhanced training).
    """

    text_rows: int = 0
    id_tokens: torch.Tensor | None = None
    id_scale: float = 1.0
    self_attention: SelfAttentionMode = "mixed"
    adain: AdaIN = "off"
    text_cross_attention: bool = True

    def __post_init__(self) -> None:
        self.self_attention = check_self_attention(self.self_attention)
        self.adain = check_applied_adain(self.adain)
        if self.text_rows < 0:
            raise ValueError("text_rows must be >= 0")

    def split(self, batch: int) -> int:
        """Check the batch layout and return the first identity row."""
        if self.text_rows == 0:
            return 0
        if batch != 2 * self.text_rows:
            raise ValueError(
                f"a two-stream call needs as many identity rows as text rows: batch {batch}, "
                f"text rows {self.text_rows}"
            )
        return self.text_rows


def _to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).transpose(1, 2)


def _from_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _AttentionIO(nn.Module):
    """The input and output conventions of diffusers' ``Attention`` (4-D inputs, norms, residual, rescale), shared
    by both processors: :meth:`__call__` prepares the inputs, the subclass's ``attend`` computes the heads'
    output, and the output projection, residual and rescale follow. An ``nn.Module`` so that the adapter's
    ``ip_adapter.{index}`` key layout (one slot per attention layer) matches IP-Adapter's."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        infinite_id: InfiniteIDAttentionState | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = None
        if hidden_states.ndim == 4:
            shape = hidden_states.shape
            b, c, h, w = shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)

        q = _to_heads(attn.to_q(hidden_states), attn.heads)
        out = _from_heads(self.attend(attn, q, context, attention_mask, infinite_id)).to(q.dtype)

        out = attn.to_out[1](attn.to_out[0](out))
        if shape is not None:
            b, c, h, w = shape
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def attend(
        self,
        attn,
        q: torch.Tensor,
        context: torch.Tensor,
        attention_mask,
        infinite_id: InfiniteIDAttentionState | None,
    ) -> torch.Tensor:
        """The attention output ``(batch, heads, tokens, head_dim)`` for queries ``q`` over ``context``."""
        raise NotImplementedError

    @staticmethod
    def keys_values(attn, q: torch.Tensor, context: torch.Tensor, attention_mask):
        """Keys, values (with diffusers' q/k norms applied) and the attention mask, shaped for SDPA."""
        k = _to_heads(attn.to_k(context), attn.heads)
        v = _to_heads(attn.to_v(context), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        mask = None
        if attention_mask is not None:
            batch = q.shape[0]
            mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        return q, k, v, mask


class InfiniteIDSelfAttnProcessor(_AttentionIO):
    """Self-attention (``attn1``) for both streams; mixed attention for the identity rows.

    ``mixed_enabled`` is this layer's per-block switch (see :func:`configure_blocks`); the state decides the
    per-step mode. The processor has no weights.
    """

    def __init__(self, mixed_enabled: bool = True) -> None:
        super().__init__()
        self.mixed_enabled = mixed_enabled

    def attend(self, attn, q, context, attention_mask, infinite_id):
        q, k, v, mask = self.keys_values(attn, q, context, attention_mask)
        mode = "independent"
        if infinite_id is not None and infinite_id.text_rows > 0 and self.mixed_enabled:
            mode = infinite_id.self_attention
        if mode == "independent":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if mask is not None:
            raise ValueError("mixed/mutual self-attention does not support an attention mask")
        first_id = infinite_id.split(q.shape[0])
        q_t, q_id = q[:first_id], q[first_id:]
        k_t, k_id = k[:first_id], k[first_id:]
        v_t, v_id = v[:first_id], v[first_id:]
        out_t = F.scaled_dot_product_attention(q_t, k_t, v_t)
        if mode == "mixed":
            out_id = ops.mixed_attention(q_id, k_id, v_id, k_t, v_t, adain=infinite_id.adain)
        else:
            out_id = ops.mutual_attention(q_id, k_t, v_t)
        return torch.cat([out_t, out_id], dim=0)


class InfiniteIDCrossAttnProcessor(_AttentionIO):
    """Text cross-attention (``attn2``) plus the decoupled image cross-attention on the ID tokens.

    ``to_k_ip``/``to_v_ip`` map ID tokens (cross-attention width) to this layer's key/value width; they are
    initialised from the frozen ``to_k``/``to_v`` so training starts from the text path's geometry.
    ``id_enabled`` and ``scale`` are this layer's per-block switch and weight (see :func:`configure_blocks`).
    """

    def __init__(self, cross_attention_dim: int, inner_dim: int, id_enabled: bool = True, scale: float = 1.0):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.id_enabled = id_enabled
        self.scale = scale

    def attend(self, attn, q, context, attention_mask, infinite_id):
        batch = q.shape[0]
        first_id = infinite_id.split(batch) if infinite_id is not None else batch
        use_id = (
            infinite_id is not None
            and infinite_id.id_tokens is not None
            and self.id_enabled
            and infinite_id.id_scale * self.scale != 0
        )
        if infinite_id is not None and not infinite_id.text_cross_attention:
            # Identity-enhanced training: the identity rows never see the text (not even through to_k).
            out = torch.zeros_like(q)
            if first_id > 0:
                out[:first_id] = self._text_attention(attn, q[:first_id], context[:first_id], attention_mask)
        else:
            out = self._text_attention(attn, q, context, attention_mask)
        if not use_id:
            return out
        tokens = infinite_id.id_tokens.to(dtype=q.dtype)
        q_id = q[first_id:]
        if tokens.shape[0] != q_id.shape[0]:
            raise ValueError(f"{tokens.shape[0]} rows of ID tokens for {q_id.shape[0]} identity rows")
        k_ip = _to_heads(self.to_k_ip(tokens), attn.heads)
        v_ip = _to_heads(self.to_v_ip(tokens), attn.heads)
        id_out = F.scaled_dot_product_attention(q_id, k_ip, v_ip)
        return torch.cat([out[:first_id], out[first_id:] + (infinite_id.id_scale * self.scale) * id_out], dim=0)

    def _text_attention(self, attn, q: torch.Tensor, context: torch.Tensor, attention_mask) -> torch.Tensor:
        q, k, v, mask = self.keys_values(attn, q, context, attention_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _layer_name(processor_key: str) -> str:
    return processor_key.removesuffix(".processor")


def install_processors(unet, init_from_text: bool = True) -> None:
    """Put Infinite-ID processors on every attention layer of ``unet`` (in place).

    Cross-attention layers get fresh ``to_k_ip``/``to_v_ip`` on the UNet's device and dtype, copied from the
    layer's ``to_k``/``to_v`` when ``init_from_text``. The UNet's own weights are untouched.
    """
    modules = dict(unet.named_modules())
    processors: dict[str, nn.Module] = {}
    for key in unet.attn_processors:
        attn = modules[_layer_name(key)]
        if attn.is_cross_attention:
            proc = InfiniteIDCrossAttnProcessor(attn.to_k.in_features, attn.to_k.out_features)
            proc.to(device=attn.to_k.weight.device, dtype=attn.to_k.weight.dtype)
            if init_from_text:
                with torch.no_grad():
                    proc.to_k_ip.weight.copy_(attn.to_k.weight)
                    proc.to_v_ip.weight.copy_(attn.to_v.weight)
            processors[key] = proc
        else:
            processors[key] = InfiniteIDSelfAttnProcessor()
    unet.set_attn_processor(processors)


def is_installed(unet) -> bool:
    procs = unet.attn_processors.values()
    return bool(procs) and all(
        isinstance(p, (InfiniteIDSelfAttnProcessor, InfiniteIDCrossAttnProcessor)) for p in procs
    )


def uninstall_processors(unet) -> None:
    """Restore diffusers' default SDPA processors (drops the ID weights)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def processor_module_list(unet) -> nn.ModuleList:
    """All processors in ``unet.attn_processors`` order: the positional ``ip_adapter.{index}`` layout."""
    if not is_installed(unet):
        raise RuntimeError("Infinite-ID processors are not installed on this UNet")
    return nn.ModuleList(unet.attn_processors.values())


def cross_attention_processors(unet) -> dict[str, InfiniteIDCrossAttnProcessor]:
    """The trainable processors, by layer name."""
    return {_layer_name(k): p for k, p in unet.attn_processors.items() if isinstance(p, InfiniteIDCrossAttnProcessor)}


_BLOCK_SHORTHANDS = {"down": "down_blocks", "mid": "mid_block", "up": "up_blocks"}


def _matches(name: str, selector: Iterable[str] | None) -> bool:
    if selector is None:
        return True
    prefixes = [_BLOCK_SHORTHANDS.get(s, s) for s in selector]
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def configure_blocks(
    unet,
    mixed_attention_blocks: Iterable[str] | None = None,
    id_blocks: Iterable[str] | None = None,
    id_block_scales: Mapping[str, float] | None = None,
) -> None:
    """Choose, per block, where mixed attention and the image cross-attention apply.

    Selectors are lists of layer-name prefixes (``"down_blocks.2"``, ``"mid_block"``,
    ``"up_blocks.0.attentions.1"``) or the shorthands ``"down"``, ``"mid"``, ``"up"``; ``None`` means every
    block and ``[]`` none. ``id_block_scales`` maps prefixes to a weight on that block's image
    cross-attention (the longest matching prefix wins; default 1).
    """
    mixed_attention_blocks = None if mixed_attention_blocks is None else list(mixed_attention_blocks)
    id_blocks = None if id_blocks is None else list(id_blocks)
    scales = {_BLOCK_SHORTHANDS.get(k, k): float(v) for k, v in (id_block_scales or {}).items()}
    if not is_installed(unet):
        raise RuntimeError("Infinite-ID processors are not installed on this UNet")
    for key, proc in unet.attn_processors.items():
        name = _layer_name(key)
        if isinstance(proc, InfiniteIDSelfAttnProcessor):
            proc.mixed_enabled = _matches(name, mixed_attention_blocks)
        else:
            proc.id_enabled = _matches(name, id_blocks)
            best = max((p for p in scales if _matches(name, [p])), key=len, default=None)
            proc.scale = scales[best] if best is not None else 1.0
