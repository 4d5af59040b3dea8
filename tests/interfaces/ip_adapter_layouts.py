"""State dicts in the exact key layouts and shape formulas of the released IP-Adapter face files, at tiny size.

Written from the published layouts (names and shape rules), independently of ``infinite_id.models.ip_adapter``, so
that loading them tests the importer against the files people have, not against itself.
"""

from __future__ import annotations

import torch

HEAD_DIM = 64  # every perceiver attention of the family uses 64-wide heads


def _randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * 0.2


def perceiver(prefix: str, in_dim: int, width: int, out_dim: int, depth: int, heads: int, g, ff: int = 4) -> dict:
    inner = heads * HEAD_DIM
    sd = {
        f"{prefix}proj_in.weight": _randn(width, in_dim, generator=g),
        f"{prefix}proj_in.bias": _randn(width, generator=g),
        f"{prefix}proj_out.weight": _randn(out_dim, width, generator=g),
        f"{prefix}proj_out.bias": _randn(out_dim, generator=g),
        f"{prefix}norm_out.weight": 1 + _randn(out_dim, generator=g),
        f"{prefix}norm_out.bias": _randn(out_dim, generator=g),
    }
    for i in range(depth):
        p = f"{prefix}layers.{i}."
        sd.update(
            {
                p + "0.norm1.weight": 1 + _randn(width, generator=g),
                p + "0.norm1.bias": _randn(width, generator=g),
                p + "0.norm2.weight": 1 + _randn(width, generator=g),
                p + "0.norm2.bias": _randn(width, generator=g),
                p + "0.to_q.weight": _randn(inner, width, generator=g),
                p + "0.to_kv.weight": _randn(2 * inner, width, generator=g),
                p + "0.to_out.weight": _randn(width, inner, generator=g),
                p + "1.0.weight": 1 + _randn(width, generator=g),
                p + "1.0.bias": _randn(width, generator=g),
                p + "1.1.weight": _randn(width * ff, width, generator=g),
                p + "1.3.weight": _randn(width, width * ff, generator=g),
            }
        )
    return sd


def image_proj(
    kind: str, cross_dim: int, clip_dim: int, face_dim: int, g, *, width: int | None = None, tokens: int = 4
) -> dict:
    """``image_proj`` of: plain (ImageProjModel), plus (Resampler), full (MLP per token), faceid (MLPProjModel),
    faceid-plus (ProjPlusModel).

    ``width``: the plus Resampler's inner width. SD 1.5's is the cross-attention width (768, 12 heads); SDXL's
    ``_vit-h`` files are 1280 wide with 20 heads and a 2048 output, narrower than their output, so an SDXL fixture
    passes a width below ``cross_dim``. ``tokens``: FaceID's token count (4; FaceID-Portrait: 16)."""
    if kind == "plain":
        tokens = 4
        return {
            "proj.weight": _randn(tokens * cross_dim, clip_dim, generator=g),
            "proj.bias": _randn(tokens * cross_dim, generator=g),
            "norm.weight": 1 + _randn(cross_dim, generator=g),
            "norm.bias": _randn(cross_dim, generator=g),
        }
    if kind == "plus":  # Resampler: 16 queries, heads = width / 64 (at least 1 here), depth 4
        width = width or cross_dim
        sd = {"latents": _randn(1, 16, width, generator=g)}
        sd.update(perceiver("", clip_dim, width, cross_dim, 4, max(1, width // HEAD_DIM), g))
        return sd
    if kind == "full":
        return {
            "proj.0.weight": _randn(clip_dim, clip_dim, generator=g),
            "proj.0.bias": _randn(clip_dim, generator=g),
            "proj.2.weight": _randn(cross_dim, clip_dim, generator=g),
            "proj.2.bias": _randn(cross_dim, generator=g),
            "proj.3.weight": 1 + _randn(cross_dim, generator=g),
            "proj.3.bias": _randn(cross_dim, generator=g),
        }
    sd = {
        "proj.0.weight": _randn(2 * face_dim, face_dim, generator=g),
        "proj.0.bias": _randn(2 * face_dim, generator=g),
        "proj.2.weight": _randn(tokens * cross_dim, 2 * face_dim, generator=g),
        "proj.2.bias": _randn(tokens * cross_dim, generator=g),
        "norm.weight": 1 + _randn(cross_dim, generator=g),
        "norm.bias": _randn(cross_dim, generator=g),
    }
    if kind == "faceid-plus":
        heads = max(1, cross_dim // HEAD_DIM)
        sd.update(perceiver("perceiver_resampler.", clip_dim, cross_dim, cross_dim, 4, heads, g))
    return sd


def ip_adapter(unet, g, lora_rank: int = 0) -> dict:
    """Positional ``ip_adapter`` weights: ``{i}.to_k_ip/to_v_ip`` on cross-attention slots of
    ``unet.attn_processors``; with ``lora_rank``, FaceID's ``{i}.to_{q,k,v,out}_lora.{down,up}`` on every slot."""
    modules = dict(unet.named_modules())
    sd = {}
    for i, key in enumerate(unet.attn_processors):
        attn = modules[key.removesuffix(".processor")]
        hidden = attn.to_q.out_features
        context = attn.to_k.in_features
        if attn.is_cross_attention:
            sd[f"{i}.to_k_ip.weight"] = _randn(hidden, context, generator=g)
            sd[f"{i}.to_v_ip.weight"] = _randn(hidden, context, generator=g)
        if lora_rank:
            for name, fan_in in (("to_q_lora", hidden), ("to_k_lora", context), ("to_v_lora", context)):
                sd[f"{i}.{name}.down.weight"] = _randn(lora_rank, fan_in, generator=g)
                sd[f"{i}.{name}.up.weight"] = _randn(hidden, lora_rank, generator=g)
            sd[f"{i}.to_out_lora.down.weight"] = _randn(lora_rank, hidden, generator=g)
            sd[f"{i}.to_out_lora.up.weight"] = _randn(hidden, lora_rank, generator=g)
    return sd


def save(path, image_proj_sd: dict, ip_sd: dict) -> None:
    """``.bin`` as torch.save of the two-key dict; ``.safetensors`` flat with prefixes (the two released forms)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        flat = {f"image_proj.{k}": v.contiguous() for k, v in image_proj_sd.items()}
        flat.update({f"ip_adapter.{k}": v.contiguous() for k, v in ip_sd.items()})
        save_file(flat, str(path))
    else:
        torch.save({"image_proj": image_proj_sd, "ip_adapter": ip_sd}, str(path))
