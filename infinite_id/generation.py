"""One generation session for the command line and the web UI: choose the model and face analyzer, turn reference
photos into ID tokens once, generate per prompt and seed, and save PNGs that say how they were made.

Both interfaces go through :func:`open_generator` and :class:`Generator`, so they accept the same inputs and
refuse bad ones with the same messages.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import __version__
from .controls import (
    ADAIN_CHOICES,
    DEFAULT_ADAIN,
    DEFAULT_GUIDANCE,
    DEFAULT_ID_SCALE,
    DEFAULT_SELF_ATTENTION,
    DEFAULT_STEPS,
    GUIDANCE,
    ID_SCALE,
    SELF_ATTENTION_CHOICES,
    STEPS,
    check_adain,
    check_self_attention,
)
from .defaults import LoadedModel, default_model_available, load_model, resolve_default_model, resolve_device
from .deprecation import renamed_names
from .errors import InfiniteIDError, OutputPathError, UserInputError
from .sampling import FAST_PRESET, check_text_stream

__all__ = [
    "ADAIN_CHOICES",  # the method's choices live in infinite_id.controls; importable from here as before
    "SELF_ATTENTION_CHOICES",
    "STYLE_PRESETS",
    "USER_ERRORS",
    "GenerationResult",
    "GenerationSettings",
    "Generator",
    "ReferenceIdentity",
    "ModelLimits",
    "model_limits",
    "apply_style",
    "open_generator",
    "save_result",
]

#: What a person can cause and should read as one sentence (bad photo, no face, wrong file, unknown model...): the
#: project's own errors only, so that a bug still shows its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (InfiniteIDError,)

#: The styles of the paper's figures (paper-spec section 3.5), as phrases appended to the prompt.
STYLE_PRESETS: dict[str, str] = {
    "comic": "in comic book style",
    "disney": "in Disney cartoon style",
    "oil-painting": "in oil painting style",
    "ghibli": "in Ghibli animation style",
    "ukiyo-e": "in Ukiyo-e Painting style",
    "watercolor": "in watercolor painting style",
    "anime": "in anime style",
}


def apply_style(prompt: str, style: str | None) -> str:
    """``prompt`` with a style preset's phrase appended (``None``/``"none"``: unchanged)."""
    if style in (None, "", "none"):
        return prompt
    if style not in STYLE_PRESETS:
        raise UserInputError(f"unknown style {style!r}: choose none or one of {', '.join(STYLE_PRESETS)}")
    return f"{prompt.rstrip(' ,.')}, {STYLE_PRESETS[style]}"


@dataclass
class GenerationSettings:
    """Everything that decides one image, besides the model and the identity (stored in the PNG)."""

    prompt: str
    negative_prompt: str | None = None
    style: str | None = None
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    id_scale: float = DEFAULT_ID_SCALE
    adain: str = DEFAULT_ADAIN
    self_attention: str = DEFAULT_SELF_ATTENTION
    height: int | None = None
    width: int | None = None
    fast: bool = False  # the fast preset (infinite_id.sampling.FAST_PRESET) instead of the exact mode

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if not self.prompt or not self.prompt.strip():
            raise UserInputError("the prompt is empty")
        STEPS.check(self.steps)
        GUIDANCE.check(self.guidance)
        ID_SCALE.check(self.id_scale)
        self.adain = check_adain(self.adain)  # True/False read as mean/off, stored (and in PNGs) as spelled here
        check_self_attention(self.self_attention)
        if not 0 <= self.seed < 2**63:
            raise UserInputError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        apply_style(self.prompt, self.style)
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and not 8 <= value <= 4096:
                raise UserInputError(f"{name} must be between 8 and 4096 pixels, got {value}")

    @property
    def full_prompt(self) -> str:
        return apply_style(self.prompt, self.style)


@dataclass
class ReferenceIdentity:
    """The reference person: the face crops used and the ID tokens ``(cond, uncond)``."""

    sources: list[str]
    crops: list[Image.Image]
    tokens: tuple[torch.Tensor, torch.Tensor]
    face_encoder: str
    #: The face used in each photo (0: the largest), recorded so an image can be remade from its metadata.
    face_indices: list[int] = field(default_factory=list)


@dataclass
class GenerationResult:
    image: Image.Image
    text_image: Image.Image | None
    settings: GenerationSettings
    metadata: dict[str, Any] = field(default_factory=dict)


#: The largest image side, as a multiple of the model's native size: beyond it a model draws repeated, broken
#: compositions and the time and memory grow with the square of the side.
MAX_SIZE_FACTOR = 2
#: The smallest side, as a fraction of the native size.
MIN_SIZE_DIVISOR = 4


@dataclass(frozen=True)
class ModelLimits:
    """What one loaded model accepts: image sides (pixels) and denoising steps."""

    native_size: int
    min_size: int
    max_size: int
    multiple: int
    max_steps: int

    def describe(self) -> str:
        return (
            f"sides {self.min_size} to {self.max_size} px in multiples of {self.multiple} "
            f"(native {self.native_size}), 1 to {self.max_steps} steps"
        )

    def check(self, steps: int, height: int | None = None, width: int | None = None) -> None:
        """Raise :class:`UserInputError` naming the first value outside these limits, with the range."""
        if not 1 <= steps <= self.max_steps:
            raise UserInputError(f"steps must be 1 to {self.max_steps} for this model's scheduler, got {steps}")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (not self.min_size <= value <= self.max_size or value % self.multiple):
                raise UserInputError(
                    f"{name} {value} does not suit this model: use {self.min_size} to {self.max_size} px in "
                    f"multiples of {self.multiple} (its native size is {self.native_size})"
                )


def model_limits(pipe: Any) -> ModelLimits:
    """What ``pipe`` accepts: sides from a quarter to twice its native size in multiples of its VAE factor, and
    as many steps as its scheduler can take."""
    factor = int(pipe.vae_scale_factor)
    native = int(pipe.unet.config.sample_size) * factor
    return ModelLimits(
        native_size=native,
        min_size=max(factor, native // MIN_SIZE_DIVISOR // factor * factor),
        max_size=native * MAX_SIZE_FACTOR,
        multiple=factor,
        max_steps=_max_scheduler_steps(pipe.scheduler),
    )


def _max_scheduler_steps(scheduler: Any) -> int:
    """The most inference steps ``scheduler`` can take: its timesteps must stay inside its training schedule (a
    DDIM with ``steps_offset=1`` at 1000 steps would index timestep 1000 of 0..999)."""
    trained = int(scheduler.config.num_train_timesteps)
    probe = scheduler.__class__.from_config(scheduler.config)
    for steps in range(trained, 0, -1):
        try:
            probe.set_timesteps(steps)
        except (ValueError, IndexError):
            continue
        if len(probe.timesteps) and int(probe.timesteps.max()) < trained:
            return steps
    return 1


class Generator:
    """A loaded model and face analyzer, ready to generate."""

    def __init__(self, model: LoadedModel, analyzer: Any) -> None:
        self.model = model
        self.analyzer = analyzer
        self.pipe = model.pipe
        self.pipe.set_progress_bar_config(disable=True)
        self._limits: ModelLimits | None = None
        for tokenizer in self._tokenizers():
            # transformers warns once per tokenizer that a long prompt "will result in indexing errors"; the
            # pipeline truncates instead, so that is wrong here: truncation_note() says what is really kept.
            tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True

    def _tokenizers(self) -> list[Any]:
        return [t for t in (getattr(self.pipe, n, None) for n in ("tokenizer", "tokenizer_2")) if t is not None]

    def truncation_note(self, prompt: str) -> str | None:
        """A sentence saying how much of ``prompt`` the text encoder reads, when it is too long for it."""
        tokenizers = self._tokenizers()
        if not tokenizers:
            return None
        tokenizer = tokenizers[0]
        ids = tokenizer(prompt, truncation=False, verbose=False).input_ids
        limit = int(tokenizer.model_max_length)
        if len(ids) <= limit:
            return None
        ignored = tokenizer.decode(ids[limit - 1 : -1]).strip()
        return (
            f"the prompt has {len(ids) - 2} tokens; the model reads the first {limit - 2} and ignores the rest "
            f"(from {ignored[:40]!r}): shorten it"
        )

    @property
    def limits(self) -> ModelLimits:
        """The sizes and steps this model and its scheduler accept (read from them, once)."""
        if self._limits is None:
            self._limits = model_limits(self.pipe)
        return self._limits

    def check(self, settings: GenerationSettings) -> None:
        """Raise :class:`UserInputError` naming the first setting this model cannot take, with the range it can."""
        settings.check()
        self.limits.check(settings.steps, settings.height, settings.width)

    # -------------------------------------------------------------- identity
    def find_faces(self, image: Any) -> list:
        """The faces in a photo, largest first (``DetectedFace``)."""
        return self.analyzer.detect(image)

    def identity(
        self,
        images: Sequence[Any],
        face_indices: Sequence[int | None] | int | None = None,
        multi_image: str = "concat",
    ) -> ReferenceIdentity:
        """Detect, align and embed one face per photo (``face_indices``: per photo, or one for all; ``None``: the
        largest), then compute the ID tokens once for every image generated with them."""
        if not images:
            raise UserInputError("give at least one reference photo")
        if multi_image not in ("concat", "mean"):
            raise UserInputError(f"multi-image mode must be concat or mean, got {multi_image!r}")
        if face_indices is None or isinstance(face_indices, int):
            face_indices = [face_indices] * len(images)
        if len(face_indices) != len(images):
            raise UserInputError(f"{len(face_indices)} face indices for {len(images)} photos")
        pairs = zip(images, face_indices, strict=True)
        crops = [self.analyzer.identity(image, face_index=index) for image, index in pairs]
        embeds = np.stack([np.asarray(c.embedding, dtype=np.float32) for c in crops])
        tokens = self.pipe.encode_identity(
            id_images=[c.clip_crop for c in crops], face_embeds=embeds, multi_image=multi_image
        )
        return ReferenceIdentity(
            sources=[c.source for c in crops],
            crops=[c.clip_crop for c in crops],
            tokens=tokens,
            face_encoder=self.analyzer.info.describe(),
            face_indices=[0 if index is None else int(index) for index in face_indices],
        )

    # -------------------------------------------------------------- images
    def generate(
        self,
        identity: ReferenceIdentity,
        settings: GenerationSettings,
        text_stream: bool = False,
        on_step: Callable[[int], None] | None = None,
    ) -> GenerationResult:
        """One image (and, with ``text_stream``, the text stream's image) for ``settings``."""
        self.check(settings)
        method = dict(FAST_PRESET) if settings.fast else {}
        check_text_stream(method.get("text_stream", "exact"), text_stream)

        def callback(pipe, step, timestep, tensors):
            if on_step is not None:
                on_step(step)
            return tensors

        output = self.pipe(
            settings.full_prompt,
            settings.negative_prompt or None,
            id_tokens=identity.tokens,
            height=settings.height,
            width=settings.width,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            id_scale=settings.id_scale,
            adain=settings.adain,
            self_attention=settings.self_attention,
            return_text_stream=text_stream,
            generator=torch.Generator(device="cpu").manual_seed(settings.seed),
            callback_on_step_end=callback,
            **method,
        )
        image = output.images[0]
        metadata = {
            "generator": f"infinite-id {__version__}",
            "prompt": settings.full_prompt,
            "settings": asdict(settings),
            "size": list(image.size),
            "model": self.model.description,
            "random_weights": self.model.random_weights,
            "face_encoder": identity.face_encoder,
            "references": [os.path.basename(s) for s in identity.sources],
            "face_indices": identity.face_indices,
        }
        text_image = output.text_images[0] if text_stream else None
        return GenerationResult(image=image, text_image=text_image, settings=settings, metadata=metadata)


def _face_analyzer(backend: str, face_model: str | None, face_model_dir: str | None):
    from .faces import get_face_analyzer

    options: dict[str, Any] = {}
    if face_model:
        options["model"] = face_model
    if face_model_dir:
        options["model_dir"] = face_model_dir
    return get_face_analyzer(backend, **options)


def open_generator(
    model: str | None = None,
    adapter: str | None = None,
    *,
    image_encoder: str | None = None,
    face_backend: str = "auto",
    face_model: str | None = None,
    face_model_dir: str | None = None,
    embedding: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    ip_adapter_options: dict[str, Any] | None = None,
) -> Generator:
    """Load everything a session needs. No ``model``: the default model (see ``infinite_id.defaults``).

    ``embedding``: a precomputed face embedding (``.npy``/``.safetensors``) used instead of a face model; the
    reference photo then only feeds the CLIP branch (centre-cropped, so crop it to the face).
    """
    from .faces import analyzer_for
    from .faces.precomputed import PrecomputedFaceEncoder

    device, torch_dtype = resolve_device(device, dtype)
    explicit = face_backend != "auto" or face_model or face_model_dir
    analyzer = None
    if embedding is not None:
        analyzer = PrecomputedFaceEncoder(embedding)
    elif explicit:
        analyzer = _face_analyzer(face_backend, face_model, face_model_dir)
    if model is None:
        if adapter is not None or image_encoder is not None:
            raise UserInputError("--adapter and --image-encoder need --model (the base model they belong to)")
        if analyzer is None and not default_model_available():
            analyzer = _face_analyzer(face_backend, face_model, face_model_dir)
        loaded, face_encoder = resolve_default_model(analyzer.info if analyzer else None, device, torch_dtype)
    else:
        if adapter is None:
            raise UserInputError("--model needs --adapter: an Infinite-ID adapter or an IP-Adapter face file")
        loaded, face_encoder = load_model(
            model,
            adapter,
            image_encoder=image_encoder,
            analyzer=analyzer,
            device=device,
            dtype=torch_dtype,
            ip_adapter_options=ip_adapter_options,
        )
    if analyzer is None:
        analyzer = loaded.pipe.face_analyzer or analyzer_for(face_encoder)
    if loaded.pipe.face_analyzer is not analyzer:
        loaded.pipe.set_face_analyzer(analyzer)
    return Generator(loaded, analyzer)


def png_info(metadata: dict[str, Any], stream: str) -> PngInfo:
    """PNG text chunks: ``parameters`` (one readable block, as other Stable Diffusion tools write it) and
    ``infinite_id`` (JSON of everything)."""
    s = metadata["settings"]
    lines = [metadata["prompt"]]
    if s.get("negative_prompt"):
        lines.append(f"Negative prompt: {s['negative_prompt']}")
    width, height = metadata["size"]
    lines.append(
        f"Steps: {s['steps']}, CFG scale: {s['guidance']}, Seed: {s['seed']}, Size: {width}x{height}, "
        f"ID scale: {s['id_scale']}, AdaIN: {s['adain']}, Self-attention: {s['self_attention']}, "
        f"Stream: {stream}, Model: {metadata['model']}, Face encoder: {metadata['face_encoder']}"
    )
    info = PngInfo()
    info.add_text("parameters", "\n".join(lines))
    info.add_text("infinite_id", json.dumps({**metadata, "stream": stream}, sort_keys=True))
    return info


_SLUG = re.compile(r"[^a-z0-9]+")
_NUMBERED = re.compile(r"^(\d{4,})-")


def _next_number(out_dir: Path) -> int:
    numbers = [int(m.group(1)) for p in out_dir.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=0) + 1


def save_result(result: GenerationResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write the identity-stream PNG (and the text stream's beside it) under a fresh number; never overwrites."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"output path {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = _SLUG.sub("-", result.settings.full_prompt.lower()).strip("-")[:48].rstrip("-") or "image"
    while True:
        stem = f"{_next_number(out_dir):04d}-{slug}-seed{result.settings.seed}"
        pairs = [(out_dir / f"{stem}.png", result.image, "identity")]
        if result.text_image is not None:
            pairs.append((out_dir / f"{stem}-text.png", result.text_image, "text"))
        try:
            written = []
            for path, image, stream in pairs:
                with open(path, "xb") as handle:  # exclusive: a concurrent writer makes us take the next number
                    image.save(handle, format="PNG", pnginfo=png_info(result.metadata, stream))
                written.append(path)
            return written
        except FileExistsError:
            continue


__getattr__ = renamed_names(__name__, {"Identity": "ReferenceIdentity"}, globals())  # deprecated alias, one release
