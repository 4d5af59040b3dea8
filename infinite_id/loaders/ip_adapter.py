"""Existing IP-Adapter-family face weights as Infinite-ID's identity stream.

``load_ip_adapter(pipe, "ip-adapter-faceid-plusv2_sd15.bin")`` reads a Tencent-layout file, builds the matching
projection (:mod:`infinite_id.models.ip_adapter`), loads the ``to_k_ip``/``to_v_ip`` weights into our attention
processors and registers both with the pipeline, so ``pipe(prompt, id_images=photo)`` runs mixed attention and
AdaIN-mean on them. Supported layouts (SD 1.5 and SDXL alike):

========================  ===================================  =========================================
kind                      released files                       identity input
========================  ===================================  =========================================
``plain``                 ip-adapter_sd15, ip-adapter_sdxl     pooled CLIP image embedding of the face
``plus``                  ip-adapter-plus(-face)_*             CLIP penultimate hidden states (Resampler)
``full``                  ip-adapter-full-face_sd15            CLIP penultimate hidden states, per token
``faceid``                ip-adapter-faceid(-portrait)_*       ArcFace 512-d (insightface buffalo_l)
``faceid-plus``           ip-adapter-faceid-plus(v2)_*         ArcFace + CLIP of the aligned face crop
========================  ===================================  =========================================

File formats: ``.bin``/``.pt`` holding ``{"image_proj": ..., "ip_adapter": ...}`` (read with
``torch.load(weights_only=True)``, so nothing is unpickled), the same flattened into ``.safetensors`` with
``image_proj.``/``ip_adapter.`` prefixes, or a training checkpoint with ``image_proj_model.``/``adapter_modules.``.

FaceID's LoRA (``to_q_lora``/``to_k_lora``/``to_v_lora``/``to_out_lora`` on every attention layer) is *fused*
into the UNet by default (``lora="fuse"``), as the FaceID pipelines apply it to the whole UNet. Both Infinite-ID
streams then run the LoRA-adapted UNet (the text stream is no longer the pristine base model); ``lora="skip"``
leaves the UNet untouched and drops the LoRA (weaker likeness), ``lora="error"`` refuses such files.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..adapter import (
    FUSED_DELTAS_ATTRIBUTE,
    AdapterError,
    AdapterMetadata,
    ClipEncoderInfo,
    IdentityAdapter,
    load_state_strict,
    unet_family,
    unfuse_lora,
)
from ..faces.base import FaceEncoderInfo
from ..identity import IdentityEncoder, IdentityFeatures, load_image_encoder
from ..models.ip_adapter import (
    PERCEIVER_HEAD_DIM,
    IPAdapterKind,
    IPAdapterProjectionConfig,
    build_ip_adapter_projection,
)
from ..models.projectors import IdentityProjectionConfig

logger = logging.getLogger(__name__)

LoRAMode = Literal["fuse", "skip", "error"]

__all__ = [
    "IPAdapter",
    "IPAdapterIdentityEncoder",
    "IPAdapterInfo",
    "detect_ip_adapter_kind",
    "is_ip_adapter_file",
    "load_ip_adapter",
    "read_ip_adapter_file",
    "unfuse_lora",
]

#: The face encoder FaceID checkpoints were trained with (their model card: insightface buffalo_l, normed).
FACEID_ENCODER = FaceEncoderInfo(backend="insightface", model="buffalo_l", dim=512)

#: Known CLIP image encoders by width, for messages: hidden size -> name, pooled size -> name.
_CLIP_BY_HIDDEN = {1280: "OpenCLIP ViT-H/14", 1664: "OpenCLIP ViT-bigG/14", 1024: "CLIP ViT-L/14"}
_CLIP_BY_POOLED = {1024: "OpenCLIP ViT-H/14", 1280: "OpenCLIP ViT-bigG/14", 768: "CLIP ViT-L/14"}
_FAMILY_BY_WIDTH = {768: "SD 1.5", 1024: "SD 2.x", 2048: "SDXL"}
_LORA_KEY = re.compile(r"^(\d+)\.(to_q_lora|to_k_lora|to_v_lora|to_out_lora)\.(down|up)\.weight$")
_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")
_PREFIXES = (("image_proj.", "ip_adapter."), ("image_proj_model.", "adapter_modules."))


@dataclass
class IPAdapterInfo:
    """What :func:`load_ip_adapter` loaded."""

    kind: IPAdapterKind
    projection: IPAdapterProjectionConfig
    base_family: str
    num_tokens: int
    lora: str
    source: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        extra = f", LoRA {self.lora}" if self.lora != "none" else ""
        return f"IP-Adapter {self.kind} ({self.base_family}, {self.num_tokens} ID tokens{extra}) from {self.source}"


def _clip_name(width: int, pooled: bool = False) -> str:
    names = _CLIP_BY_POOLED if pooled else _CLIP_BY_HIDDEN
    return f"{names[width]} (width {width})" if width in names else f"a CLIP image encoder of width {width}"


def _split_flat(tensors: dict[str, torch.Tensor], source: str) -> tuple[dict, dict]:
    for proj_prefix, ip_prefix in _PREFIXES:
        image_proj = {k.removeprefix(proj_prefix): v for k, v in tensors.items() if k.startswith(proj_prefix)}
        ip = {k.removeprefix(ip_prefix): v for k, v in tensors.items() if k.startswith(ip_prefix)}
        if image_proj and ip:
            return image_proj, ip
    sample = sorted(tensors)[:5]
    raise AdapterError(
        f"{source} is not an IP-Adapter file: expected image_proj.* and ip_adapter.* weights, found keys {sample}"
    )


def read_ip_adapter_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(image_proj state dict, ip_adapter state dict)`` from a ``.bin``/``.pt`` or ``.safetensors`` file.

    Pickled files are read with ``torch.load(weights_only=True)``: a file that needs arbitrary code to load is
    refused, not run.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no IP-Adapter file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if "infinite_id" in (f.metadata() or {}):
                    raise AdapterError(f"{path} is an Infinite-ID adapter: load it with pipe.load_adapter(...)")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except AdapterError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc
        return _split_flat(tensors, str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe pickles, RuntimeError/EOFError for corrupt files
        raise AdapterError(
            f"cannot read {path} safely: {str(exc).splitlines()[0]}. Only plain tensor dicts are loaded "
            "(torch.load(weights_only=True)); convert the file to safetensors if it holds anything else"
        ) from exc
    if not isinstance(state, dict):
        raise AdapterError(f"{path} holds a {type(state).__name__}, not an IP-Adapter state dict")
    if "image_proj" in state and "ip_adapter" in state:
        extra = sorted(set(state) - {"image_proj", "ip_adapter"})
        if extra:
            raise AdapterError(f"{path}: unexpected top-level keys {extra} (expected image_proj and ip_adapter)")
        return dict(state["image_proj"]), dict(state["ip_adapter"])
    if all(isinstance(v, torch.Tensor) for v in state.values()):
        return _split_flat(state, str(path))
    raise AdapterError(f"{path}: expected the keys image_proj and ip_adapter, found {sorted(state)[:5]}")


def is_ip_adapter_file(path: str | os.PathLike) -> bool:
    """True for a file that is not an Infinite-ID adapter: a pickle, or safetensors without our metadata."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix != ".safetensors":
        return True
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "infinite_id" not in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable: let the Infinite-ID loader report it
        return False


def detect_ip_adapter_kind(image_proj: dict[str, torch.Tensor]) -> IPAdapterKind:
    """Tell the projection family by its parameter names."""
    keys = set(image_proj)
    if "perceiver_resampler.proj_in.weight" in keys:
        return "faceid-plus"
    if "latents" in keys and "proj_in.weight" in keys:
        return "plus"
    if "proj.3.weight" in keys:
        return "full"
    if "proj.0.weight" in keys and "norm.weight" in keys:
        return "faceid"
    if "proj.weight" in keys and "norm.weight" in keys:
        return "plain"
    raise AdapterError(f"unknown IP-Adapter projection layout (keys {sorted(keys)[:6]})")


def _depth(image_proj: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in image_proj if (m := re.match(rf"^{re.escape(prefix)}layers\.(\d+)\.", k))}
    return len(found)


def _projection_config(
    kind: IPAdapterKind, sd: dict[str, torch.Tensor], shortcut: bool, shortcut_scale: float
) -> IPAdapterProjectionConfig:
    """Read every size from the weights' shapes."""
    try:
        if kind == "plain":
            d = sd["norm.weight"].shape[0]
            out, clip = sd["proj.weight"].shape
            return IPAdapterProjectionConfig(kind, d, clip_dim=clip, num_tokens=out // d)
        if kind == "plus":
            d = sd["proj_out.weight"].shape[0]
            width, clip = sd["proj_in.weight"].shape
            heads = sd["layers.0.0.to_q.weight"].shape[0] // PERCEIVER_HEAD_DIM
            ff = sd["layers.0.1.1.weight"].shape[0] // width
            return IPAdapterProjectionConfig(
                kind, d, clip_dim=clip, num_tokens=sd["latents"].shape[1], width=width, depth=_depth(sd, ""),
                heads=heads, ff_mult=ff,
            )  # fmt: skip
        if kind == "full":
            hidden, clip = sd["proj.0.weight"].shape
            d = sd["proj.3.weight"].shape[0]
            return IPAdapterProjectionConfig(kind, d, clip_dim=clip, hidden_dim=hidden, num_tokens=0)
        d = sd["norm.weight"].shape[0]
        hidden, face = sd["proj.0.weight"].shape
        tokens = sd["proj.2.weight"].shape[0] // d
        if kind == "faceid":
            return IPAdapterProjectionConfig(kind, d, face_dim=face, hidden_dim=hidden, num_tokens=tokens)
        p = "perceiver_resampler."
        width, clip = sd[p + "proj_in.weight"].shape
        return IPAdapterProjectionConfig(
            kind, d, clip_dim=clip, face_dim=face, hidden_dim=hidden, num_tokens=tokens, width=width,
            depth=_depth(sd, p), heads=sd[p + "layers.0.0.to_q.weight"].shape[0] // PERCEIVER_HEAD_DIM,
            ff_mult=sd[p + "layers.0.1.1.weight"].shape[0] // width, shortcut=shortcut,
            shortcut_scale=shortcut_scale,
        )  # fmt: skip
    except KeyError as exc:
        raise AdapterError(f"IP-Adapter {kind} projection lacks the weight {exc.args[0]!r}") from None


class IPAdapterIdentityEncoder:
    """The identity encoder for an imported IP-Adapter: the CLIP input its family reads, its own "no identity"
    input (CLIP of a blank image for hidden-state families, zeros for pooled embeddings and ArcFace vectors), and
    its projection. Same interface as :class:`~infinite_id.identity.IdentityEncoder`."""

    def __init__(self, projection, image_encoder=None, feature_extractor=None, clip_layer: int = -2) -> None:
        self.projection = projection
        self.clip_input = projection.clip_input
        self._clip = None
        if self.clip_input != "none":
            self._clip = IdentityEncoder(image_encoder, feature_extractor, projection, clip_layer)

    def _param(self) -> torch.Tensor:
        return next(self.projection.parameters())

    @torch.no_grad()
    def clip_features(self, crops) -> torch.Tensor:
        if self.clip_input == "hidden":
            return self._clip.clip_hidden(crops)
        device, dtype = self._clip._encoder_device_dtype()
        if isinstance(crops, torch.Tensor):
            pixels = crops
        else:
            pixels = self._clip.feature_extractor(images=list(crops), return_tensors="pt").pixel_values
        return self._clip.image_encoder(pixels.to(device=device, dtype=dtype)).image_embeds[:, None, :]

    def features(self, crops, face_embeds: torch.Tensor) -> IdentityFeatures:
        face = torch.as_tensor(face_embeds)
        if self.clip_input == "none":
            return IdentityFeatures(face_embeds=face, clip_hidden=torch.zeros(face.shape[0], 1, 1))
        return IdentityFeatures(face_embeds=face, clip_hidden=self.clip_features(crops))

    @torch.no_grad()
    def tokens(self, features: IdentityFeatures) -> torch.Tensor:
        p = self._param()
        return self.projection(
            features.clip_hidden.to(device=p.device, dtype=p.dtype),
            features.face_embeds.to(device=p.device, dtype=p.dtype),
        )

    def unconditional_features(self, n: int = 1) -> IdentityFeatures:
        face_dim = max(self.projection.config.face_dim, 1)
        face = torch.zeros(n, face_dim)
        if self.clip_input == "none":
            return IdentityFeatures(face_embeds=face, clip_hidden=torch.zeros(n, 1, 1))
        if self.clip_input == "pooled":
            return IdentityFeatures(face_embeds=face, clip_hidden=torch.zeros(n, 1, self.projection.config.clip_dim))
        return IdentityFeatures(face_embeds=face, clip_hidden=self._clip.unconditional_features(n).clip_hidden)


def _attention_modules(unet) -> list:
    modules = dict(unet.named_modules())
    return [modules[key.removesuffix(".processor")] for key in unet.attn_processors]


def _check_base(ip: dict[str, torch.Tensor], unet, source: str) -> None:
    width = unet.config.cross_attention_dim
    family = unet_family(unet)
    slots = len(unet.attn_processors)
    indices = [int(m.group(1)) for k in ip if (m := _IP_KEY.match(k))]
    if not indices:
        raise AdapterError(f"{source}: no to_k_ip/to_v_ip weights in the ip_adapter part")
    file_width = ip[f"{indices[0]}.to_k_ip.weight"].shape[1]
    if file_width != width:
        made_for = _FAMILY_BY_WIDTH.get(file_width, f"a base model of cross-attention width {file_width}")
        raise AdapterError(
            f"{source} was made for {made_for} (cross-attention width {file_width}), but the pipeline's base model "
            f"is {family} (width {width}): load it into a {made_for} pipeline"
        )
    if max(indices) >= slots:
        raise AdapterError(
            f"{source} has weights for attention layer {max(indices)}, but the UNet has {slots} attention layers: "
            "the adapter was made for a UNet of a different shape"
        )


def _apply_lora(lora: dict[str, torch.Tensor], unet, scale: float) -> int:
    """Fuse ``W += scale * up @ down`` into to_q/to_k/to_v/to_out[0] of each attention layer; returns layers."""
    attns = _attention_modules(unet)
    grouped: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        index, name, part = _LORA_KEY.match(key).groups()
        grouped.setdefault((int(index), name), {})[part] = value
    targets = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out"}
    updates = []
    for (index, name), parts in sorted(grouped.items()):
        if set(parts) != {"down", "up"} or index >= len(attns):
            raise AdapterError(f"LoRA weights of attention layer {index} ({name}) are incomplete or out of range")
        layer = getattr(attns[index], targets[name])
        linear = layer[0] if isinstance(layer, torch.nn.ModuleList) else layer
        delta = parts["up"].float() @ parts["down"].float()
        if delta.shape != linear.weight.shape:
            raise AdapterError(
                f"LoRA {index}.{name} has shape {tuple(delta.shape)}, the UNet layer {tuple(linear.weight.shape)}"
            )
        updates.append((linear, delta, parts["up"], parts["down"]))
    with torch.no_grad():  # check everything first, then change the UNet
        for linear, delta, _, _ in updates:
            linear.weight.copy_((linear.weight.float() + scale * delta.to(linear.weight.device)).to(linear.weight))
    # what was added, to take it out again (unload_adapter, or the next load); the low-rank factors, not the deltas
    unet.__dict__[FUSED_DELTAS_ATTRIBUTE] = [(linear, up, down, scale) for linear, _, up, down in updates]
    return len({index for index, _ in grouped})


class IPAdapter(IdentityAdapter):
    """An imported IP-Adapter-family file as the identity adapter: its projection reads the CLIP input of its
    family (or none), its image cross-attention goes into our processors, and FaceID's LoRA is fused into the
    UNet on :meth:`install` (``lora="fuse"``). Built by :func:`load_ip_adapter`."""

    family = "ip-adapter"

    def __init__(
        self,
        projection: torch.nn.Module,
        metadata: AdapterMetadata,
        cross_attention: dict[str, torch.Tensor],
        info: IPAdapterInfo,
        image_encoder: Any = None,
        feature_extractor: Any = None,
        lora: dict[str, torch.Tensor] | None = None,
        lora_scale: float = 1.0,
    ) -> None:
        super().__init__(projection, metadata, cross_attention, image_encoder, feature_extractor)
        self.info = info
        self._lora = lora
        self._lora_scale = lora_scale

    def check_image_encoder(self) -> None:
        _check_clip(self.projection, self.image_encoder, self.feature_extractor, self.info.kind, self.info.source)

    def build_identity_encoder(self) -> IPAdapterIdentityEncoder:
        return IPAdapterIdentityEncoder(self.projection, self.image_encoder, self.feature_extractor, clip_layer=-2)

    def install(self, unet) -> None:
        """Our processors with the file's image cross-attention, then FaceID's LoRA fused (or skipped)."""
        super().install(unet)
        lora, self._lora = self._lora, None
        if not lora:
            return
        if self.info.lora == "skipped":
            logger.warning("FaceID LoRA weights skipped (lora='skip'): expect weaker likeness")
            return
        layers = _apply_lora(lora, unet, self._lora_scale)
        self.info.lora = f"fused into {layers} attention layers"
        self.metadata.training["lora"] = self.info.lora
        logger.warning(
            "FaceID LoRA fused into the UNet (%d layers): both streams now run the LoRA-adapted base model; "
            "unload_adapter() takes it out again",
            layers,
        )

    @classmethod
    def from_state_dicts(
        cls,
        image_proj: dict[str, torch.Tensor],
        ip: dict[str, torch.Tensor],
        unet,
        *,
        source: str,
        image_encoder: Any = None,
        feature_extractor: Any = None,
        face_encoder: FaceEncoderInfo | None = None,
        face_analyzer: FaceEncoderInfo | None = None,
        shortcut: bool | None = None,
        shortcut_scale: float = 1.0,
        lora: LoRAMode = "fuse",
        lora_scale: float = 1.0,
    ) -> IPAdapter:
        """The adapter for ``unet`` from a file's ``(image_proj, ip_adapter)`` state dicts: every size is read from
        the weights' shapes and checked against ``unet`` and the image encoder before anything is built.
        ``face_encoder``: for FaceID families, default insightface buffalo_l; CLIP-only families default to
        ``face_analyzer`` (the pipeline's: it only crops the face)."""
        family = unet_family(unet)
        kind = detect_ip_adapter_kind(image_proj)
        if shortcut is None:
            shortcut = "v2" in Path(source).name.lower()
        config = _projection_config(kind, image_proj, shortcut, shortcut_scale)
        width = unet.config.cross_attention_dim
        if config.cross_attention_dim != width:
            made_for = _FAMILY_BY_WIDTH.get(config.cross_attention_dim, f"width {config.cross_attention_dim}")
            raise AdapterError(
                f"{source}: its projection makes tokens for {made_for} (width {config.cross_attention_dim}), but the "
                f"pipeline's UNet is {family} (width {width})"
            )
        lora_sd = {k: v for k, v in ip.items() if _LORA_KEY.match(k)}
        ip_sd = {k: v for k, v in ip.items() if k not in lora_sd}
        _check_base(ip_sd, unet, source)
        if lora_sd and lora == "error":
            raise AdapterError(f"{source} carries FaceID LoRA weights; pass lora='fuse' or lora='skip'")

        projection = build_ip_adapter_projection(config)
        _check_clip(projection, image_encoder, feature_extractor, kind, source)
        clip_info = ClipEncoderInfo(name="none", hidden_size=0, num_tokens=0, layer=-2)
        if projection.clip_input != "none":
            pooled = projection.clip_input == "pooled"
            clip_info = ClipEncoderInfo.of(image_encoder, -2, pooled, name=_clip_name(config.clip_dim, pooled))
        if projection.uses_face:
            face_encoder = face_encoder or (FACEID_ENCODER if config.face_dim == FACEID_ENCODER.dim else None)
            if face_encoder is None or face_encoder.dim != config.face_dim:
                raise AdapterError(
                    f"{source} expects {config.face_dim}-d face embeddings: pass face_encoder=FaceEncoderInfo(...) "
                    "naming the encoder that makes them"
                )
        elif face_encoder is None:
            face_encoder = face_analyzer
        if face_encoder is None:
            raise AdapterError(
                f"the IP-Adapter {kind} reads the face crop only: set the face analyzer that crops faces first "
                "(pipe.set_face_analyzer(get_face_analyzer())) or pass face_encoder=..."
            )
        load_state_strict(projection, image_proj, f"IP-Adapter {kind} image_proj")

        lora_done = "none" if not lora_sd else ("pending" if lora == "fuse" else "skipped")
        num_tokens = config.num_tokens if kind != "full" else clip_info.num_tokens
        metadata = AdapterMetadata(
            projection=IdentityProjectionConfig(
                cross_attention_dim=config.cross_attention_dim,
                face_dim=face_encoder.dim,
                clip_dim=config.clip_dim,
                clip_num_tokens=clip_info.num_tokens,
                face_num_tokens=config.num_tokens if projection.uses_face else 0,
                clip_mapper=f"ip-adapter-{kind}",  # type: ignore[arg-type] - not one of ours; see extra
                extra={"ip_adapter": config.to_dict(), "source": source},
            ),
            base_family=family,
            cross_attention_dim=config.cross_attention_dim,
            num_attention_layers=len(unet.attn_processors),
            face_encoder=face_encoder,
            clip_encoder=clip_info,
            training={"imported_from": "ip-adapter", "kind": kind, "lora": lora_done},
        )
        info = IPAdapterInfo(kind, config, family, num_tokens, lora_done, source)
        return cls(projection.eval(), metadata, ip_sd, info, image_encoder, feature_extractor, lora_sd, lora_scale)


def _check_clip(projection, image_encoder: Any, feature_extractor: Any, kind: str, source: str) -> None:
    """The image encoder must give the width the projection reads: pooled embeddings or hidden states."""
    clip_input, clip_dim = projection.clip_input, projection.config.clip_dim
    if clip_input == "none":
        return
    pooled = clip_input == "pooled"
    if image_encoder is None or feature_extractor is None:
        raise AdapterError(
            f"the IP-Adapter {kind} reads CLIP image features: pass image_encoder=<folder or hub id of "
            f"{_clip_name(clip_dim, pooled)}>"
        )
    cfg = image_encoder.config
    have = cfg.projection_dim if pooled else cfg.hidden_size
    if have != clip_dim:
        raise AdapterError(
            f"image encoder mismatch: {source} was trained with {_clip_name(clip_dim, pooled)}, but the pipeline's "
            f"image encoder is {_clip_name(have, pooled)} ({getattr(cfg, '_name_or_path', '') or '?'}). SD 1.5 "
            "adapters and the SDXL '_vit-h' files use ViT-H (models/image_encoder); the other SDXL files use "
            "ViT-bigG (sdxl_models/image_encoder)"
        )


def load_ip_adapter(
    pipe,
    path_or_state: str | os.PathLike | tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    *,
    image_encoder: Any = None,
    feature_extractor: Any = None,
    face_encoder: FaceEncoderInfo | None = None,
    shortcut: bool | None = None,
    shortcut_scale: float = 1.0,
    lora: LoRAMode = "fuse",
    lora_scale: float = 1.0,
    name: str | None = None,
) -> IPAdapterInfo:
    """Load IP-Adapter-family weights into ``pipe`` as its identity adapter.

    Args:
        path_or_state: a weight file, or ``(image_proj, ip_adapter)`` state dicts.
        image_encoder: CLIP vision model (or its folder / hub id) for the families that read CLIP; it must be the
            one the adapter was trained with (ViT-H for SD 1.5 and the ``_vit-h`` SDXL files, ViT-bigG for the
            other SDXL ones).
        face_encoder: the face encoder the embeddings must come from. Default: insightface buffalo_l for FaceID
            families (what they were trained with); for CLIP-only families, the pipeline's face analyzer (it only
            crops the face), which must then be set first.
        shortcut: FaceID-Plus only: ``True`` for PlusV2, ``False`` for V1. Default: from the file name ("v2").
        lora: what to do with FaceID LoRA weights: ``"fuse"`` into the UNet (both streams), ``"skip"``, ``"error"``.
        name: the file name to report (and to tell PlusV2 by) when state dicts are given.
    """
    source = name or ("state dict" if isinstance(path_or_state, tuple) else str(path_or_state))
    image_proj, ip = path_or_state if isinstance(path_or_state, tuple) else read_ip_adapter_file(path_or_state)
    current = (getattr(pipe, "image_encoder", None), getattr(pipe, "feature_extractor", None))
    image_encoder, feature_extractor = load_image_encoder(image_encoder, feature_extractor, current)
    analyzer = None if pipe.face_analyzer is None else pipe.face_analyzer.info
    adapter = IPAdapter.from_state_dicts(
        image_proj, ip, pipe.unet, source=source, image_encoder=image_encoder, feature_extractor=feature_extractor,
        face_encoder=face_encoder, face_analyzer=analyzer, shortcut=shortcut, shortcut_scale=shortcut_scale,
        lora=lora, lora_scale=lora_scale,
    )  # fmt: skip
    pipe.set_adapter(adapter)
    return adapter.info
