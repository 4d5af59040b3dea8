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
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .attention_processors import install_processors, processor_module_list
from .errors import MissingInputError, UserInputError
from .faces.base import FaceEncoderInfo, check_compatible
from .identity import IdentityEncoder, IdentityFeatures, MultiImageMode, combine_tokens
from .models.projectors import IdentityProjection, IdentityProjectionConfig
from .outputs import atomic_write

logger = logging.getLogger(__name__)

FORMAT_NAME = "infinite-id-adapter"
FORMAT_VERSION = 1
ADAPTER_WEIGHTS_NAME = "infinite_id_adapter.safetensors"

__all__ = [
    "ADAPTER_WEIGHTS_NAME",
    "AdapterError",
    "AdapterMetadata",
    "ClipEncoderInfo",
    "IdentityAdapter",
    "load_adapter_file",
    "save_adapter_file",
    "unet_family",
    "unfuse_lora",
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

    @classmethod
    def of(
        cls, image_encoder: Any, layer: int = -1, pooled: bool = False, name: str = "clip-vision"
    ) -> ClipEncoderInfo:
        """What a transformers CLIP vision model feeds a mapper: its hidden states at ``layer`` (one token per
        patch plus the class token), or with ``pooled`` its one projected embedding."""
        cfg = image_encoder.config
        return cls(
            name=getattr(cfg, "_name_or_path", "") or name,
            hidden_size=cfg.projection_dim if pooled else cfg.hidden_size,
            num_tokens=1 if pooled else (cfg.image_size // cfg.patch_size) ** 2 + 1,
            layer=layer,
            image_size=cfg.image_size,
        )


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
        """Parse and validate the header: every field's type and range is checked before anything is built from
        it (a header is as untrusted as the file), so a lying header reads as one :class:`AdapterError`."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise AdapterError(f"adapter metadata is not valid JSON ({exc})") from None
        data = _section(data, "metadata", set(_TOP_FIELDS), required={"format"})
        if data.get("format") != FORMAT_NAME:
            raise AdapterError(f"not an Infinite-ID adapter (format {data.get('format')!r})")
        missing = sorted(set(_TOP_FIELDS) - {"training"} - set(data))
        if missing:
            raise AdapterError(f"adapter metadata lacks {missing}")
        version = _integer(data, "format_version", "metadata", minimum=0)
        if version > FORMAT_VERSION:
            raise AdapterError(
                f"adapter format version {version} is newer than this library supports ({FORMAT_VERSION}): "
                "upgrade infinite-id"
            )
        projection = _parse_projection(data["projection"])
        family = data["base_family"]
        if family not in BASE_FAMILIES:
            raise AdapterError(f"adapter metadata base_family {family!r} is not one of {', '.join(BASE_FAMILIES)}")
        face = _section(data["face_encoder"], "face_encoder", {"backend", "model", "dim"}, required=None)
        for key in ("backend", "model"):
            if not isinstance(face[key], str) or not face[key]:
                raise AdapterError(f"adapter metadata face_encoder.{key} must be a non-empty string")
        clip = _section(data["clip_encoder"], "clip_encoder", set(_CLIP_FIELDS), required={"name", "hidden_size",
                                                                                          "num_tokens"})  # fmt: skip
        if not isinstance(clip["name"], str):
            raise AdapterError("adapter metadata clip_encoder.name must be a string")
        training = data.get("training") or {}
        if not isinstance(training, dict):
            raise AdapterError("adapter metadata training must be an object")
        metadata = cls(
            projection=projection,
            base_family=family,
            cross_attention_dim=_integer(data, "cross_attention_dim", "metadata"),
            num_attention_layers=_integer(data, "num_attention_layers", "metadata"),
            face_encoder=FaceEncoderInfo(face["backend"], face["model"], _integer(face, "dim", "face_encoder")),
            clip_encoder=ClipEncoderInfo(
                name=clip["name"],
                hidden_size=_integer(clip, "hidden_size", "clip_encoder"),
                num_tokens=_integer(clip, "num_tokens", "clip_encoder"),
                layer=_integer(clip, "layer", "clip_encoder", minimum=-MAX_METADATA_SIZE, default=-1),
                image_size=_integer(clip, "image_size", "clip_encoder", default=224),
            ),
            training=dict(training),
        )
        for name, a, b in (
            ("projection.cross_attention_dim", projection.cross_attention_dim, metadata.cross_attention_dim),
            ("projection.face_dim", projection.face_dim, metadata.face_encoder.dim),
        ):
            if a != b:
                raise AdapterError(f"adapter metadata is inconsistent: {name} is {a} but the model side says {b}")
        return metadata

    def expected_projection_shapes(self) -> dict[str, tuple[int, ...]]:
        """The ``image_proj.*`` tensor shapes this metadata implies, computed on the meta device (no memory)."""
        try:
            with torch.device("meta"):
                module = IdentityProjection(self.projection)
        except (ValueError, RuntimeError) as exc:
            raise AdapterError(f"adapter metadata describes no buildable mapper: {exc}") from None
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

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


#: The largest size any metadata field may give (widths, token and layer counts): far above real models (SDXL's
#: width 2048, ViT-bigG's 1664, 257 CLIP tokens, 140 attention layers), far below an allocation that hurts.
MAX_METADATA_SIZE = 65536
BASE_FAMILIES = ("sd15", "sd2", "sdxl")
_TOP_FIELDS = ("format", "format_version", "projection", "base_family", "cross_attention_dim",
               "num_attention_layers", "face_encoder", "clip_encoder", "training")  # fmt: skip
_CLIP_FIELDS = ("name", "hidden_size", "num_tokens", "layer", "image_size")
_PROJECTION_SIZES = ("cross_attention_dim", "face_dim", "clip_dim", "clip_num_tokens", "face_num_tokens",
                     "resampler_queries", "resampler_depth", "resampler_heads")  # fmt: skip
_CLIP_MAPPERS = ("linear", "mlp", "resampler")


def _section(data: Any, where: str, allowed: set[str], required: set[str] | None) -> dict[str, Any]:
    """``data`` as a JSON object with only ``allowed`` keys and every ``required`` one (``None``: all allowed)."""
    if not isinstance(data, dict):
        raise AdapterError(f"adapter metadata {where} must be a JSON object, not {type(data).__name__}")
    extra = sorted(set(data) - allowed)
    if extra:
        raise AdapterError(f"adapter metadata {where} has unknown fields {extra}")
    missing = sorted((allowed if required is None else required) - set(data))
    if missing:
        raise AdapterError(f"adapter metadata {where} lacks {missing}")
    return data


def _integer(data: dict[str, Any], key: str, where: str, minimum: int = 1, default: int | None = None) -> int:
    """``data[key]`` as an int in ``[minimum, MAX_METADATA_SIZE]``: JSON booleans, floats and strings refused."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_METADATA_SIZE:
        raise AdapterError(
            f"adapter metadata {where}.{key} must be a whole number from {minimum} to {MAX_METADATA_SIZE}, "
            f"got {value!r}"
        )
    return value


def _parse_projection(data: Any) -> IdentityProjectionConfig:
    fields = set(IdentityProjectionConfig.__dataclass_fields__)
    data = _section(data, "projection", fields, required={"cross_attention_dim"})
    values: dict[str, Any] = {k: _integer(data, k, "projection") for k in _PROJECTION_SIZES if k in data}
    if data.get("face_hidden_dim") is not None:
        values["face_hidden_dim"] = _integer(data, "face_hidden_dim", "projection")
    mapper = data.get("clip_mapper", "linear")
    if mapper not in _CLIP_MAPPERS:
        raise AdapterError(f"adapter metadata projection.clip_mapper must be one of {_CLIP_MAPPERS}, got {mapper!r}")
    extra = data.get("extra") or {}
    if not isinstance(extra, dict):
        raise AdapterError("adapter metadata projection.extra must be an object")
    return IdentityProjectionConfig(**values, clip_mapper=mapper, extra=dict(extra))


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
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"infinite_id": metadata.to_json()}))
    return path


#: Training-record entries that name a model or a data folder (recorded by name, never by path).
_SOURCE_KEYS = ("base_model", "cache", "shards", "image_encoder")


def _without_paths(metadata: AdapterMetadata) -> AdapterMetadata:
    """``metadata`` with every local path reduced to its last component (adapter files get shared)."""
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
            if "infinite_id" not in header:
                raise AdapterError(
                    f"{path} has no Infinite-ID metadata; IP-Adapter files are imported with "
                    "infinite_id.loaders.ip_adapter (not load_adapter)"
                )
            try:
                metadata = AdapterMetadata.from_json(header["infinite_id"])
            except AdapterError as exc:
                raise AdapterError(f"{path}: {exc}") from None
            keys = list(f.keys())
            _check_tensor_shapes(path, metadata, {k: tuple(f.get_slice(k).get_shape()) for k in keys})
            tensors = {k: f.get_tensor(k) for k in keys}  # read only once the header and the shapes agree
    except AdapterError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise AdapterError(f"{path} holds NaN or infinite weights (in {bad[:3]}): the training diverged; use another")
    image_proj = {k.removeprefix("image_proj."): v for k, v in tensors.items() if k.startswith("image_proj.")}
    ip_adapter = {k.removeprefix("ip_adapter."): v for k, v in tensors.items() if k.startswith("ip_adapter.")}
    return image_proj, ip_adapter, metadata


def _check_tensor_shapes(path: Path, metadata: AdapterMetadata, shapes: dict[str, tuple[int, ...]]) -> None:
    """The mappers' tensors must have exactly the shapes the metadata implies (the image cross-attention weights
    are checked against the UNet itself when they are copied, see :func:`load_state_strict`)."""
    unknown = [k for k in shapes if not k.startswith(("image_proj.", "ip_adapter."))]
    if unknown:
        raise AdapterError(f"{path}: unexpected keys {unknown[:5]} (expected image_proj.* and ip_adapter.*)")
    expected = metadata.expected_projection_shapes()
    found = {k.removeprefix("image_proj."): s for k, s in shapes.items() if k.startswith("image_proj.")}
    wrong = [f"{k}: file {found.get(k)} vs metadata {s}" for k, s in expected.items() if found.get(k) != s]
    wrong += [f"{k}: not in the metadata's mapper" for k in sorted(set(found) - set(expected))]
    if wrong:
        raise AdapterError(f"{path}: the tensors do not match its metadata ({'; '.join(wrong[:3])}): a damaged file")


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


class IdentityAdapter:
    """One loaded adapter as one object: its mappers, its metadata, the image cross-attention weights it brings,
    the identity encoder that turns reference inputs into ID tokens, and the checks that guard its use.

    The pipeline takes one through :meth:`~infinite_id.pipelines.InfiniteIDPipeline.set_adapter` and only calls
    :meth:`check`, :meth:`install` and :meth:`encode`, so an adapter family (ours, the imported IP-Adapters) is one
    subclass: it says which image encoder widths it reads (:meth:`check_image_encoder`) and how its inputs are
    encoded (:meth:`build_identity_encoder`).

    Args:
        projection: the mappers (``image_proj.*`` in a file).
        metadata: what the adapter was built for.
        cross_attention: the processors' ``to_k_ip``/``to_v_ip`` state (``ip_adapter.*``); ``None``: a fresh
            adapter, initialised from the text path's ``to_k``/``to_v`` (the start of training).
        image_encoder, feature_extractor: the CLIP vision model the mappers read, and its processor.
    """

    family = "infinite-id"

    def __init__(
        self,
        projection: torch.nn.Module,
        metadata: AdapterMetadata,
        cross_attention: dict[str, torch.Tensor] | None = None,
        image_encoder: Any = None,
        feature_extractor: Any = None,
    ) -> None:
        self.projection = projection
        self.metadata = metadata
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor
        self._cross_attention = cross_attention
        self._fresh = cross_attention is None
        self._identity_encoder: Any = None

    # ------------------------------------------------------------------ checks
    def check(self, unet, face_encoder: FaceEncoderInfo | None = None) -> None:
        """Everything that must hold before the adapter changes ``unet``; raises :class:`AdapterError`."""
        self._check_not_spent()
        self.check_unet(unet)
        self.check_image_encoder()
        if face_encoder is not None:
            self.check_face_encoder(face_encoder)

    def _check_not_spent(self) -> None:
        if self._cross_attention is None and not self._fresh:
            raise RuntimeError(
                "this adapter's image cross-attention was already handed to a UNet: read the adapter again (or "
                "save it from that pipeline) to set it on another"
            )

    def check_unet(self, unet) -> None:
        self.metadata.check_unet(unet, unet_family(unet))

    def check_image_encoder(self) -> None:
        """The image encoder's width must be the one the CLIP mapper was trained on (no encoder: checked on use)."""
        if self.image_encoder is None:
            return
        width = self.image_encoder.config.hidden_size
        if width != self.metadata.clip_encoder.hidden_size or width != self.metadata.projection.clip_dim:
            raise AdapterError(
                f"the adapter expects the CLIP image encoder {self.metadata.clip_encoder.describe()}, but the "
                f"pipeline's image encoder has width {width} "
                f"({getattr(self.image_encoder.config, '_name_or_path', '?')}); pass the matching image_encoder to "
                "load_adapter"
            )

    def check_face_encoder(self, info: FaceEncoderInfo) -> None:
        """Embeddings from ``info`` must be the ones the adapter was trained on."""
        check_compatible(self.metadata.face_encoder, info)

    def check_face_embeds(self, face_embeds: torch.Tensor) -> None:
        expected = self.metadata.face_encoder.dim
        if face_embeds.shape[-1] != expected:
            raise AdapterError(
                f"face embedding has {face_embeds.shape[-1]} dimensions but the adapter was trained on "
                f"{self.metadata.face_encoder.describe()}: use that face encoder"
            )

    # ------------------------------------------------------------------ the UNet
    def install(self, unet) -> None:
        """Put the adapter's image cross-attention into ``unet``'s processors (what an earlier adapter fused into
        the UNet is taken out first). The weights are handed over once: the object keeps no second copy."""
        self._check_not_spent()
        state, self._cross_attention = self._cross_attention, None
        unfuse_lora(unet)
        install_processors(unet, init_from_text=state is None)
        if state is not None:
            load_state_strict(processor_module_list(unet), state, "ip_adapter (image cross-attention)")

    def to(self, *args: Any, **kwargs: Any) -> IdentityAdapter:
        """Move the mappers (they are not a pipeline component, so ``pipe.to`` and offload do not see them)."""
        self.projection.to(*args, **kwargs)
        return self

    # ------------------------------------------------------------------ identity
    @property
    def identity_encoder(self) -> Any:
        """Reference inputs -> features -> ID tokens (``features``, ``tokens``, ``unconditional_features``)."""
        if self._identity_encoder is None:
            self._identity_encoder = self.build_identity_encoder()
        return self._identity_encoder

    def build_identity_encoder(self) -> Any:
        if self.image_encoder is None:
            raise RuntimeError(
                "the pipeline has no CLIP image encoder: pass image_encoder=<folder or hub id> to load_adapter"
            )
        if self.feature_extractor is None:
            raise RuntimeError(
                "the pipeline's image encoder has no feature_extractor (its CLIPImageProcessor): pass "
                "feature_extractor=... to load_adapter"
            )
        return IdentityEncoder(
            self.image_encoder, self.feature_extractor, self.projection, self.metadata.clip_encoder.layer
        )

    def encode(
        self, features: IdentityFeatures, multi_image: MultiImageMode = "concat"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ID tokens ``(cond, uncond)`` for ``features`` (several photos merged by ``multi_image``), each
        ``(1, tokens, cross_attention_dim)``; ``uncond`` is the "no identity" input of classifier-free guidance."""
        self.check_face_embeds(features.face_embeds)
        encoder = self.identity_encoder
        cond = combine_tokens(encoder.tokens(features), multi_image)
        uncond = combine_tokens(encoder.tokens(encoder.unconditional_features(len(features))), multi_image)
        return cond, uncond

    # ------------------------------------------------------------------ files
    @classmethod
    def from_file(
        cls, path: str | os.PathLike, image_encoder: Any = None, feature_extractor: Any = None
    ) -> IdentityAdapter:
        """An Infinite-ID adapter file, read and checked (:func:`load_adapter_file`), with the image encoder it
        reads (a model; see :func:`~infinite_id.identity.load_image_encoder` for folders and hub ids)."""
        image_proj, cross_attention, metadata = load_adapter_file(path)
        projection = IdentityProjection(metadata.projection)
        load_state_strict(projection, image_proj, "image_proj (mappers)")
        return cls(projection.eval(), metadata, cross_attention, image_encoder, feature_extractor)

    @classmethod
    def fresh(
        cls,
        projection_config: IdentityProjectionConfig,
        unet,
        face_encoder: FaceEncoderInfo,
        clip_encoder: ClipEncoderInfo | None = None,
        image_encoder: Any = None,
        feature_extractor: Any = None,
        clip_layer: int = -1,
    ) -> IdentityAdapter:
        """A new, untrained adapter for ``unet`` (the start of training): new mappers, and image cross-attention
        that :meth:`install` copies from ``to_k``/``to_v``."""
        if projection_config.cross_attention_dim != unet.config.cross_attention_dim:
            raise ValueError(
                f"projection width {projection_config.cross_attention_dim} must equal the UNet's cross-attention "
                f"width {unet.config.cross_attention_dim}"
            )
        if clip_encoder is None:
            if image_encoder is None:
                raise ValueError("give clip_encoder=ClipEncoderInfo(...) or an image_encoder")
            clip_encoder = ClipEncoderInfo.of(image_encoder, layer=clip_layer)
        metadata = AdapterMetadata(
            projection=projection_config,
            base_family=unet_family(unet),
            cross_attention_dim=unet.config.cross_attention_dim,
            num_attention_layers=len(unet.attn_processors),
            face_encoder=face_encoder,
            clip_encoder=clip_encoder,
        )
        return cls(IdentityProjection(projection_config), metadata, None, image_encoder, feature_extractor)

    def save(self, path: str | os.PathLike, unet, training: dict[str, Any] | None = None) -> Path:
        """Write the adapter (mappers, ``unet``'s image cross-attention, metadata); returns the file."""
        metadata = self.metadata if training is None else replace(self.metadata, training=dict(training))
        return save_adapter_file(path, self.projection, unet, metadata)


#: On the UNet: the weight deltas an adapter fused into it (FaceID's LoRA), to take out again.
FUSED_DELTAS_ATTRIBUTE = "_infinite_id_fused_lora"


def unfuse_lora(unet) -> bool:
    """Subtract a FaceID LoRA that an IP-Adapter import fused into ``unet``; returns whether there was one.

    The weights come back up to rounding (exactly in float32 up to float error, within half-precision rounding
    in float16/bfloat16)."""
    fused = unet.__dict__.pop(FUSED_DELTAS_ATTRIBUTE, None)
    if not fused:
        return False
    with torch.no_grad():
        for linear, up, down, scale in fused:
            delta = (up.float() @ down.float()).to(linear.weight.device)
            linear.weight.copy_((linear.weight.float() - scale * delta).to(linear.weight))
    logger.warning("FaceID LoRA taken out of the UNet again (%d layers)", len({id(f[0]) for f in fused}))
    return True
