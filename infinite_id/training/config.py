"""Training configuration: one YAML (or TOML) file, dotted ``--key=value`` overrides, strict validation.

The file mirrors :class:`TrainConfig`: sections ``model``, ``adapter``, ``data``, ``train``, ``output`` and
``validation``. Unknown keys are errors (with a suggestion), so that a typo never silently trains the default.
See ``configs/sd15.yaml`` and ``configs/sdxl.yaml`` for commented examples and ``docs/training.md`` for the
reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import UserInputError

TrainingMode = Literal["identity-enhanced", "joint"]

__all__ = [
    "AdapterSection",
    "ConfigError",
    "DataSection",
    "ModelSection",
    "OutputSection",
    "TrainConfig",
    "TrainSection",
    "TrainingMode",
    "ValidationSection",
    "apply_overrides",
    "load_config",
]


class ConfigError(UserInputError):
    """A training configuration that cannot be used (unknown key, wrong type, bad value)."""


@dataclass
class ModelSection:
    """The frozen base model (a diffusers folder or hub id) and the frozen CLIP image encoder."""

    pretrained: str = ""
    revision: str | None = None
    variant: str | None = None
    # CLIP vision model: a folder / hub id; default: the base model's ``image_encoder`` subfolder.
    image_encoder: str | None = None
    image_encoder_subfolder: str | None = None
    # CLIPImageProcessor: default the base model's ``feature_extractor`` subfolder, else the image encoder's.
    feature_extractor: str | None = None
    feature_extractor_subfolder: str | None = None


@dataclass
class AdapterSection:
    """The trainable part: mapper design (see ``IdentityProjectionConfig``) and its initialisation."""

    clip_mapper: Literal["linear", "mlp", "resampler"] = "linear"
    clip_layer: int = -1
    face_num_tokens: int = 4
    face_hidden_dim: int | None = None
    resampler_queries: int = 16
    resampler_depth: int = 4
    resampler_heads: int = 8
    init_from_text: bool = True
    # Continue from an exported adapter file (weights only; use ``output.resume`` for a full resume).
    init_weights: str | None = None


@dataclass
class DataSection:
    """The training set (a ``train-prepare`` cache, or its shards) and how target photos are prepared."""

    # The cache written by ``infinite-id train-prepare`` (indexed, random access) ...
    cache: str = ""
    # ... or, instead, the tar shards written by ``infinite-id train-shards`` (a folder or its shards.json),
    # streamed: for sets too large to index (docs/training.md, "Streaming shards for large sets").
    shards: str = ""
    resolution: int = 512
    center_crop: bool = True
    random_flip: bool = False
    num_workers: int = 2
    # Shards only: pairs held per loader worker for shuffling (memory: this many target photos, encoded).
    shuffle_buffer: int = 1000


@dataclass
class EMASection:
    enabled: bool = False
    decay: float = 0.9999
    # Export and validate with the EMA weights (when enabled).
    use_for_export: bool = True


@dataclass
class TrainSection:
    """Optimisation. ``batch_size`` is per process; the global batch is ``batch_size * processes * accumulation``."""

    mode: TrainingMode = "identity-enhanced"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = "constant_with_warmup"
    lr_warmup_steps: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    # Probability of replacing the ID condition by the "no identity" input (zero face vector, blank CLIP
    # image), so the adapter supports classifier-free guidance.
    id_dropout: float = 0.05
    # Joint mode only: probability of replacing the caption by the empty prompt.
    text_dropout: float = 0.05
    noise_offset: float = 0.0
    # Extra weight of the diffusion loss on the target's face box (weight 1 + this inside it, per latent cell,
    # normalised to the same mean): the face is a small part of the image but all of the identity. 0: the
    # paper's plain loss. Needs face boxes in the data (``train-prepare`` records them with a face analyzer).
    face_loss_weight: float = 0.0
    # Identity loss (beyond the paper, as PuLID): ``1 - cosine`` between a differentiable face encoder's
    # embeddings of the VAE-decoded predicted clean image and of the target photo, added with this weight on the
    # samples whose timestep is at most ``identity_loss_max_timestep`` (low noise: a recognisable x0). 0: off.
    # Needs face boxes, and ``identity_loss_encoder``: a registered encoder (docs/training.md, "Identity loss").
    identity_loss_weight: float = 0.0
    identity_loss_max_timestep: int = 400
    identity_loss_encoder: str | None = None
    # ``epsilon`` / ``v_prediction``; default: the base model's scheduler.
    prediction_type: str | None = None
    ema: EMASection = field(default_factory=EMASection)


@dataclass
class OutputSection:
    dir: str = "outputs/train"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    # ``"auto"``: resume from the newest complete checkpoint in ``dir`` if there is one; ``None``: start fresh
    # (refused if checkpoints exist, so nothing is overwritten by accident); or a checkpoint folder.
    resume: str | None = "auto"
    progress_bar: bool = True
    tensorboard: bool = True


@dataclass
class ValidationSection:
    """Identity-only sample images from held-in references, written every ``every`` steps (0: never)."""

    every: int = 0
    num_references: int = 2
    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    seed: int = 1234
    resolution: int | None = None
    # Prompts for the pipeline (both streams, as at inference); each reference is drawn with each prompt.
    prompts: list[str] = field(default_factory=lambda: ["a photo of a person"])


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    adapter: AdapterSection = field(default_factory=AdapterSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run could use."""
        problems = []
        if not self.model.pretrained:
            problems.append("model.pretrained is required (a diffusers folder or hub id)")
        if bool(self.data.cache) == bool(self.data.shards):
            problems.append(
                "give exactly one of data.cache (run `infinite-id train-prepare` first) and data.shards "
                "(`infinite-id train-shards`)"
            )
        if self.data.shuffle_buffer < 1:
            problems.append("data.shuffle_buffer must be >= 1")
        t = self.train
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps"):
            if getattr(t, name) < 1:
                problems.append(f"train.{name} must be >= 1")
        for name in ("id_dropout", "text_dropout"):
            if not 0.0 <= getattr(t, name) < 1.0:
                problems.append(f"train.{name} must be in [0, 1)")
        if t.learning_rate <= 0:
            problems.append("train.learning_rate must be > 0")
        if t.face_loss_weight < 0:
            problems.append("train.face_loss_weight must be >= 0")
        if t.identity_loss_weight < 0:
            problems.append("train.identity_loss_weight must be >= 0")
        if t.identity_loss_max_timestep < 0:
            problems.append("train.identity_loss_max_timestep must be >= 0")
        if t.identity_loss_weight > 0:
            from .identity_loss import unknown_encoder_problem

            problem = unknown_encoder_problem(t.identity_loss_encoder)
            if problem:
                problems.append(problem)
        if self.data.resolution % 8:
            problems.append("data.resolution must be a multiple of 8")
        if self.output.checkpoint_every < 0 or self.output.keep_checkpoints < 1:
            problems.append("output.checkpoint_every must be >= 0 and output.keep_checkpoints >= 1")
        if self.validation.every < 0:
            problems.append("validation.every must be >= 0")
        if t.prediction_type not in (None, "epsilon", "v_prediction"):
            problems.append("train.prediction_type must be epsilon or v_prediction")
        if problems:
            raise ConfigError("invalid training configuration:\n  " + "\n  ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a dataclass field type (the few kinds the config uses)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a section (mapping), got {value!r}")
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where} must not be empty")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads "1e-4" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _build(cls, data: dict[str, Any], where: str = ""):
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown configuration key {path!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    """Override values are YAML scalars: ``1e-4``, ``true``, ``null``, ``bf16``, ``[a, b]``."""
    value = yaml.safe_load(text) if text != "" else ""
    return value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` (an optional leading ``--`` is accepted) to a raw config mapping."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        key, raw = text.split("=", 1)
        parts = key.strip().replace("-", "_").split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no configuration file at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), validate: bool = True) -> TrainConfig:
    """Read a config file (``.yaml``/``.yml``/``.toml``), apply overrides, and check it."""
    data = read_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    config = _build(TrainConfig, data)
    if validate:
        config.validate()
    return config


def config_from_dict(data: dict[str, Any], validate: bool = True) -> TrainConfig:
    config = _build(TrainConfig, data)
    if validate:
        config.validate()
    return config
