"""Which model the command line and the web UI use when none is named, and loading the ones that are named.

``resolve_default_model`` is the one place that decides the default. Today it returns the *smoke model*: a tiny
SD-1.5-shaped pipeline with random weights built in-process (``infinite_id.testing``), with a fresh adapter whose
face input matches the chosen face analyzer. It runs every code path offline in a second, but its images are
noise. When the trained miniature model ships, ``resolve_default_model`` returns it instead and nothing else
changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .faces.base import FaceEncoderInfo

logger = logging.getLogger(__name__)

__all__ = [
    "SMOKE_MODEL_WARNING",
    "LoadedModel",
    "build_smoke_model",
    "default_model_description",
    "load_model",
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
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "float16"
    choices = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in choices:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, {', '.join(choices)}")
    return device, choices[dtype]


def default_model_description() -> str:
    """What ``resolve_default_model`` gives, without building it (for ``infinite-id info``)."""
    return "smoke model (random weights, built in-process; images are noise) - the miniature model is not shipped yet"


def resolve_default_model(
    face_encoder: FaceEncoderInfo, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """The model used when no model is named. Change this function (only) to make the miniature model the default."""
    return build_smoke_model(face_encoder, device, dtype)


def build_smoke_model(
    face_encoder: FaceEncoderInfo, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """A tiny SD-1.5-shaped Infinite-ID pipeline with random weights and a fresh adapter for ``face_encoder``."""
    import warnings

    from diffusers.utils import logging as diffusers_logging

    from .models.projectors import IdentityProjectionConfig
    from .pipelines import InfiniteIDStableDiffusionPipeline
    from .testing import tiny_sd15_pipeline

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
        FACEID_ENCODER,
        detect_ip_adapter_kind,
        is_ip_adapter_file,
        load_ip_adapter,
        read_ip_adapter_file,
    )
    from .pipelines import InfiniteIDPipeline

    pipe = InfiniteIDPipeline.from_pretrained(model, torch_dtype=dtype)
    adapter_path = Path(adapter)
    notes: list[str] = []
    if adapter_path.is_file() and is_ip_adapter_file(adapter_path):
        state = read_ip_adapter_file(adapter_path)
        kind = detect_ip_adapter_kind(state[0])
        options = dict(ip_adapter_options or {})
        if kind in ("faceid", "faceid-plus"):
            face_encoder = analyzer.info if analyzer is not None else FACEID_ENCODER
        elif analyzer is not None:
            face_encoder = analyzer.info
        else:
            from .faces import get_face_analyzer

            analyzer = get_face_analyzer("auto")
            face_encoder = analyzer.info
        if analyzer is not None:
            pipe.set_face_analyzer(analyzer)
        info = load_ip_adapter(
            pipe, state, name=adapter_path.name, image_encoder=image_encoder, face_encoder=face_encoder, **options
        )
        description = f"{model} + {info.describe()}"
        notes.append(info.describe())
    else:
        metadata = pipe.load_adapter(adapter, image_encoder=image_encoder)
        face_encoder = metadata.face_encoder
        description = f"{model} + Infinite-ID adapter {adapter}"
    pipe.to(device)
    if pipe.image_proj is not None:
        pipe.image_proj.to(device=device)
    return LoadedModel(pipe=pipe, name=str(model), description=description, notes=notes), face_encoder
