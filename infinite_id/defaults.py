"""Which model the command line and the web UI use when none is named, and loading the ones that are named.

``resolve_default_model`` is the one place that decides the default: the first *registered default model* that is
available here. Providers plug in with :func:`register_default_model` or an entry point in the group
``infinite_id.default_models``; the miniature world registers the *miniature model* this way (shipped in
``infinite_id/world/weights/``, see docs/world.md: an SD-1.5-shaped 64 px model trained from scratch on the world's
portraits, with its identity-enhanced adapter and its own face backend ``mini``; offline on a CPU in seconds), so this
module never imports the world. If no provider is available (a trimmed install), it falls back to the *smoke model*:
a tiny pipeline with random weights built in-process (:mod:`infinite_id.smoke_model`), with a fresh adapter for the
chosen face analyzer, whose images are noise, and says so loudly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .errors import ModelLoadError, UserInputError, model_loading
from .faces.base import FaceEncoderInfo
from .outputs import public_name
from .plugins import PluginLoadError, PluginRegistry

logger = logging.getLogger(__name__)

__all__ = [
    "SMOKE_MODEL_WARNING",
    "DefaultModelProvider",
    "LoadedModel",
    "build_smoke_model",
    "default_face_backend",
    "default_model_available",
    "default_model_description",
    "default_model_provider",
    "load_miniature_model",
    "load_model",
    "miniature_model_available",
    "register_default_model",
    "resolve_default_model",
    "resolve_device",
]

SMOKE_MODEL_WARNING = (
    "No --model given, and the miniature model is not available yet: using the SMOKE MODEL, a tiny pipeline with "
    "RANDOM weights built in-process. Its images are noise; it checks that everything runs, offline. For real "
    "images pass --model <SDXL or SD 1.5 folder or hub id> --adapter <adapter file> (see docs/cli.md)."
)


@dataclass
class LoadedModel:
    """A ready pipeline (adapter loaded) and how to describe it to people and in PNG metadata."""

    pipe: Any
    name: str
    description: str
    random_weights: bool = False
    warning: str | None = None
    notes: list[str] = field(default_factory=list)


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[str, torch.dtype]:
    """``auto`` picks CUDA, then MPS, then CPU; dtype ``auto`` is float16 on a GPU and float32 on the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise UserInputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise UserInputError(
                f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)"
            )
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "float16"
    choices = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in choices:
        raise UserInputError(f"unknown dtype {dtype!r}: use auto, {', '.join(choices)}")
    return device, choices[dtype]


@runtime_checkable
class DefaultModelProvider(Protocol):
    """A model that can stand in when none is named: the miniature world's, or a plugin's.

    ``face_backend`` names the registered face backend its adapter was trained with (``mini`` for the miniature
    model); ``available`` must be cheap (no weights loaded): ``infinite-id info`` asks it.
    """

    name: str
    description: str
    face_backend: str

    def available(self) -> bool: ...

    def load(
        self, device: str = "cpu", dtype: torch.dtype = torch.float32, **options: Any
    ) -> tuple[LoadedModel, FaceEncoderInfo]: ...


DEFAULT_MODEL_GROUP = "infinite_id.default_models"
DEFAULT_MODELS: PluginRegistry[DefaultModelProvider] = PluginRegistry(DEFAULT_MODEL_GROUP, "default model")


def register_default_model(provider: DefaultModelProvider) -> None:
    """Offer ``provider`` as the default model; registered ones are tried before entry points, in order."""
    if not isinstance(provider, DefaultModelProvider):
        raise TypeError(f"{provider!r} lacks what a default model provides (name, description, available, load, ...)")
    DEFAULT_MODELS.register(provider.name, provider)


def default_model_provider(name: str | None = None) -> DefaultModelProvider | None:
    """The provider called ``name``, or (no name) the first registered one available here; ``None`` if none is.

    A declared provider whose module is missing (a trimmed install) counts as unavailable."""
    for candidate in DEFAULT_MODELS.names() if name is None else (name,):
        try:
            provider = DEFAULT_MODELS.get(candidate)
        except (KeyError, PluginLoadError) as exc:
            logger.debug("default model %s: %s", candidate, exc)
            continue
        if name is not None or provider.available():
            return provider
    return None


def default_model_available() -> bool:
    """True when a registered default model (the miniature model, where the world ships) can load here."""
    return default_model_provider() is not None


def miniature_model_available() -> bool:
    """Deprecated alias of :func:`default_model_available` (kept for one release)."""
    return default_model_available()


def default_model_description() -> str:
    """What ``resolve_default_model`` gives, without building it (for ``infinite-id info``)."""
    provider = default_model_provider()
    if provider is not None:
        return provider.description
    return (
        "smoke model (random weights, built in-process; images are noise): the miniature model's weights are missing"
    )


def default_face_backend() -> str:
    """The face backend that goes with the default model: its own (``mini`` for the miniature model), else ``auto``."""
    provider = default_model_provider()
    return provider.face_backend if provider is not None else "auto"


def resolve_default_model(
    face_encoder: FaceEncoderInfo | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[LoadedModel, FaceEncoderInfo]:
    """The model used when no model is named, and the face encoder its adapter needs.

    ``face_encoder`` only matters for the smoke fallback (its fresh adapter is built for that encoder); a registered
    default model's adapter was trained on its own face encoder and needs it.
    """
    provider = default_model_provider()
    if provider is not None:
        return provider.load(device=device, dtype=dtype)
    if face_encoder is None:
        raise UserInputError("the smoke model needs the face encoder it should be built for")
    return build_smoke_model(face_encoder, device, dtype), face_encoder


def load_miniature_model(
    weights: str | os.PathLike | None = None,
    adapter_stage: str = "adapter_identity_enhanced",
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[LoadedModel, FaceEncoderInfo]:
    """Deprecated (kept for one release): use ``infinite_id.world.default_model.load_miniature_model``, or
    :func:`resolve_default_model`. Loads the registered ``miniature`` model with one of its adapters."""
    import warnings

    warnings.warn(
        "infinite_id.defaults.load_miniature_model moved to infinite_id.world.default_model", DeprecationWarning, 2
    )
    provider = default_model_provider("miniature")
    if provider is None:
        raise ModelLoadError("the miniature model is not registered here (is infinite_id.world installed?)")
    return provider.load(device=device, dtype=dtype, weights=weights, adapter_stage=adapter_stage)


def build_smoke_model(
    face_encoder: FaceEncoderInfo, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """A tiny SD-1.5-shaped Infinite-ID pipeline with random weights and a fresh adapter for ``face_encoder``."""
    import warnings

    from diffusers.utils import logging as diffusers_logging

    from .models.projectors import IdentityProjectionConfig
    from .pipelines import InfiniteIDStableDiffusionPipeline
    from .smoke_model import tiny_sd15_pipeline

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the tiny scheduler config's deprecation note is noise here
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(0)
        base = tiny_sd15_pipeline(with_image_encoder=True)
        components = {k: v for k, v in base.components.items()}
        pipe = InfiniteIDStableDiffusionPipeline(**components, requires_safety_checker=False)
        encoder = pipe.image_encoder.config
        config = IdentityProjectionConfig(
            cross_attention_dim=pipe.unet.config.cross_attention_dim,
            face_dim=face_encoder.dim,
            clip_dim=encoder.hidden_size,
            clip_num_tokens=(encoder.image_size // encoder.patch_size) ** 2 + 1,
        )
        pipe.init_adapter(config, face_encoder)
    diffusers_logging.set_verbosity(verbosity)
    pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    pipe.image_proj.to(device=device, dtype=dtype)
    return LoadedModel(
        pipe=pipe,
        name="smoke",
        description="smoke model (random weights; images are noise)",
        random_weights=True,
        warning=SMOKE_MODEL_WARNING,
    )


def load_model(
    model: str | os.PathLike,
    adapter: str | os.PathLike,
    *,
    image_encoder: str | None = None,
    analyzer: Any = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    ip_adapter_options: dict[str, Any] | None = None,
) -> tuple[LoadedModel, FaceEncoderInfo]:
    """A base model (diffusers folder or hub id) with an adapter: an Infinite-ID adapter file, or an IP-Adapter-family
    file (``.bin``/``.safetensors``, see :mod:`infinite_id.loaders.ip_adapter`).

    ``analyzer``: the face analyzer the user chose, or ``None`` for the adapter's own. Returns the model and the face
    encoder the adapter needs (the caller builds the analyzer for it when ``analyzer`` is ``None``).
    """
    from .loaders.ip_adapter import (
        detect_ip_adapter_kind,
        is_ip_adapter_file,
        load_ip_adapter,
        read_ip_adapter_file,
    )
    from .pipelines import InfiniteIDPipeline

    with model_loading(f"the base model {model}"):
        pipe = InfiniteIDPipeline.from_pretrained(model, torch_dtype=dtype)
    adapter_path = Path(adapter)
    notes: list[str] = []
    if adapter_path.is_file() and is_ip_adapter_file(adapter_path):
        if adapter_path.suffix != ".safetensors" and _is_safetensors(adapter_path):
            raise ModelLoadError(f"{adapter_path} is a safetensors file named {adapter_path.suffix}: rename it to "
                                 f"{adapter_path.stem}.safetensors")  # fmt: skip
        with model_loading(f"the adapter {adapter}"):
            state = read_ip_adapter_file(adapter_path)
        kind = detect_ip_adapter_kind(state[0])
        options = dict(ip_adapter_options or {})
        if kind in ("faceid", "faceid-plus"):
            # the encoder the file was trained with (load_ip_adapter's default); a chosen analyzer is checked
            # against it there, as in the Python API, instead of standing in for it
            face_encoder = None
        elif analyzer is not None:
            face_encoder = analyzer.info
        else:
            from .faces import get_face_analyzer

            analyzer = get_face_analyzer("auto")
            face_encoder = analyzer.info
        if analyzer is not None:
            pipe.set_face_analyzer(analyzer)
        with model_loading(f"the adapter {adapter}"):
            info = load_ip_adapter(
                pipe, state, name=adapter_path.name, image_encoder=image_encoder, face_encoder=face_encoder, **options
            )
        face_encoder = pipe.adapter_metadata.face_encoder
        description = f"{public_name(model)} + {info.describe()}"
        notes.append(info.describe())
    else:
        with model_loading(f"the adapter {adapter}"):
            metadata = pipe.load_adapter(adapter, image_encoder=image_encoder)
        face_encoder = metadata.face_encoder
        description = f"{public_name(model)} + Infinite-ID adapter {public_name(adapter)}"
    pipe.to(device)
    if pipe.image_proj is not None:
        pipe.image_proj.to(device=device)
    return LoadedModel(pipe=pipe, name=public_name(model), description=description, notes=notes), face_encoder


def _is_safetensors(path: Path) -> bool:
    """True when ``path`` starts like a safetensors file (an 8-byte header length, then a JSON object)."""
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and 1 < int.from_bytes(head[:8], "little") < 100 * 2**20 and head[8:9] == b"{"
