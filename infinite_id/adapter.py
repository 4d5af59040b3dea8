"""Adapter files: the trained mappers and image cross-attention weights, with metadata that guards their use.

Layout (safetensors, compatible in spirit with IP-Adapter/diffusers):

* ``image_proj.*``: the :class:`~infinite_id.models.projectors.IdentityProjection` (CLIP and face mappers);
* ``ip_adapter.{i}.to_k_ip.weight`` / ``ip_adapter.{i}.to_v_ip.weight``: ``i`` is the index of the attention
  layer in ``unet.attn_processors`` order (self-attention slots hold no weights), as in IP-Adapter files;
* header metadata ``"infinite_id"``: JSON of :class:`AdapterMetadata` (base family and sizes, face and CLIP
  encoders, token counts), checked before any weight is copied so that a mismatch reads as a sentence rather
  than a tensor size error.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .attention_processors import processor_module_list
from .errors import MissingInputError, UserInputError
from .faces.base import FaceEncoderInfo
from .models.projectors import IdentityProjection, IdentityProjectionConfig

FORMAT_NAME = "infinite-id-adapter"
FORMAT_VERSION = 1
ADAPTER_WEIGHTS_NAME = "infinite_id_adapter.safetensors"

__all__ = [
    "ADAPTER_WEIGHTS_NAME",
    "AdapterError",
    "AdapterMetadata",
    "ClipEncoderInfo",
    "load_adapter_file",
    "save_adapter_file",
    "unet_family",
]


class AdapterError(UserInputError):
    """An adapter file that cannot be used with this pipeline (wrong base model, encoder or shape)."""


@dataclass
class ClipEncoderInfo:
    """The frozen CLIP image encoder that feeds the CLIP mapper."""

    name: str
    hidden_size: int
    num_tokens: int
    layer: int = -1
    image_size: int = 224

    def describe(self) -> str:
        return f"{self.name} (width {self.hidden_size}, {self.num_tokens} tokens, hidden layer {self.layer})"


@dataclass
class AdapterMetadata:
    """What an adapter was built for; saved in the file header and checked on load."""

    projection: IdentityProjectionConfig
    base_family: str
    cross_attention_dim: int
    num_attention_layers: int
    face_encoder: FaceEncoderInfo
    clip_encoder: ClipEncoderInfo
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = FORMAT_NAME
        data["format_version"] = FORMAT_VERSION
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdapterMetadata:
        data = json.loads(text)
        if data.get("format") != FORMAT_NAME:
            raise AdapterError(f"not an Infinite-ID adapter (format {data.get('format')!r})")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise AdapterError(
                f"adapter format version {data['format_version']} is newer than this library supports "
                f"({FORMAT_VERSION}): upgrade infinite-id"
            )
        return cls(
            projection=IdentityProjectionConfig.from_dict(data["projection"]),
            base_family=data["base_family"],
            cross_attention_dim=int(data["cross_attention_dim"]),
            num_attention_layers=int(data["num_attention_layers"]),
            face_encoder=FaceEncoderInfo.from_dict(data["face_encoder"]),
            clip_encoder=ClipEncoderInfo(**data["clip_encoder"]),
            training=dict(data.get("training") or {}),
        )

    def check_unet(self, unet, family: str) -> None:
        """Raise :class:`AdapterError` unless this adapter fits ``unet`` of base ``family``."""
        if self.base_family != family:
            raise AdapterError(
                f"this adapter was trained for a {self.base_family} base model, but the pipeline's base model is "
                f"{family}: load it into a {self.base_family} pipeline"
            )
        dim = unet.config.cross_attention_dim
        if self.cross_attention_dim != dim:
            raise AdapterError(
                f"adapter cross-attention width {self.cross_attention_dim} does not match the UNet's {dim} "
                f"({family}): the adapter was made for another base model"
            )
        layers = len(unet.attn_processors)
        if self.num_attention_layers != layers:
            raise AdapterError(
                f"adapter has {self.num_attention_layers} attention layers, the UNet has {layers}: "
                "the adapter was made for a UNet of a different shape"
            )


def unet_family(unet) -> str:
    """``"sdxl"`` for UNets with SDXL's text-time conditioning, else ``"sd15"`` or ``"sd2"`` by context width."""
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        return "sdxl"
    return "sd2" if unet.config.cross_attention_dim == 1024 else "sd15"


def save_adapter_file(
    path: str | os.PathLike, projection: IdentityProjection, unet, metadata: AdapterMetadata
) -> Path:
    """Write ``projection`` and the UNet's ``to_k_ip``/``to_v_ip`` to ``path`` (atomically: temp file + rename)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".safetensors":
        path = path / ADAPTER_WEIGHTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"image_proj.{k}": v for k, v in projection.state_dict().items()}
    tensors.update({f"ip_adapter.{k}": v for k, v in processor_module_list(unet).state_dict().items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = _without_paths(metadata)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"infinite_id": metadata.to_json()})
    os.replace(tmp, path)
    return path


#: Training-record entries that name a model or a data folder (recorded by name, never by path).
_SOURCE_KEYS = ("base_model", "cache", "shards", "image_encoder")


def _without_paths(metadata: AdapterMetadata) -> AdapterMetadata:
    """``metadata`` with every local path reduced to its last component (adapter files get shared)."""
    from dataclasses import replace

    from .outputs import public_name

    training = {
        k: (public_name(v) if k in _SOURCE_KEYS and isinstance(v, str) else v) for k, v in metadata.training.items()
    }
    clip = replace(metadata.clip_encoder, name=public_name(metadata.clip_encoder.name))
    return replace(metadata, clip_encoder=clip, training=training)


def load_adapter_file(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], AdapterMetadata]:
    """Read an adapter file: ``(image_proj state dict, ip_adapter state dict, metadata)``."""
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTER_WEIGHTS_NAME
    if not path.is_file():
        raise MissingInputError(f"no adapter file at {path}")
    if path.suffix != ".safetensors":
        raise AdapterError(f"{path}: Infinite-ID adapters are .safetensors files")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc
    if "infinite_id" not in header:
        raise AdapterError(
            f"{path} has no Infinite-ID metadata; IP-Adapter files are imported with "
            "infinite_id.loaders.ip_adapter (not load_adapter)"
        )
    metadata = AdapterMetadata.from_json(header["infinite_id"])
    image_proj = {k.removeprefix("image_proj."): v for k, v in tensors.items() if k.startswith("image_proj.")}
    ip_adapter = {k.removeprefix("ip_adapter."): v for k, v in tensors.items() if k.startswith("ip_adapter.")}
    unknown = [k for k in tensors if not k.startswith(("image_proj.", "ip_adapter."))]
    if unknown:
        raise AdapterError(f"{path}: unexpected keys {unknown[:5]} (expected image_proj.* and ip_adapter.*)")
    return image_proj, ip_adapter, metadata


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with key and shape problems reported as one :class:`AdapterError`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:3]}{' ...' if len(wrong) > 3 else ''}")
        raise AdapterError(f"{what} weights do not fit: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
