"""The method's controls, defined once: their choices, defaults, ranges and the one validation of each.

The pipeline, the generation session (command line and web UI), the evaluation's method presets and the attention
state all read them here, so a control is spelled one way everywhere and a bad value gets the same sentence from
every entry point. Adding an ablation is adding its mode to a tuple below (and its arithmetic to ``ops``).

=====================  =============================================  ==========  ==============================
control                choices / range                                default     accepted spellings
=====================  =============================================  ==========  ==============================
``adain``              ``auto``, ``mean``, ``off``, ``full``          ``auto``    ``True`` = mean, ``False`` = off
``self_attention``     ``mixed``, ``mutual``, ``independent``         ``mixed``
``id_scale``           0 to 5                                         1.0
``num_inference_steps``  1 to 1000 (and what the scheduler can take)  30
``guidance_scale``     0 to 50                                        5.0
the two step windows   ``(start, end)``, 0 <= start <= end <= 1       (0, 1)
=====================  =============================================  ==========  ==============================

``adain="auto"`` turns AdaIN-mean on when the prompt names a style (:func:`resolve_adain`); a UNet call is then
given one of :data:`ADAIN_APPLIED` (``off``, ``mean``, ``full``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import UserInputError

__all__ = [
    "ADAIN_APPLIED",
    "ADAIN_CHOICES",
    "DEFAULT_ADAIN",
    "DEFAULT_GUIDANCE",
    "DEFAULT_ID_SCALE",
    "DEFAULT_SELF_ATTENTION",
    "DEFAULT_STEPS",
    "DEFAULT_WINDOW",
    "GUIDANCE",
    "ID_SCALE",
    "METHOD_CONTROLS",
    "SELF_ATTENTION_CHOICES",
    "STEPS",
    "AdaIN",
    "AdaINChoice",
    "NumberRange",
    "SelfAttentionMode",
    "check_adain",
    "check_method",
    "check_self_attention",
    "check_window",
    "face_backend_choices",
    "resolve_adain",
]

AdaINChoice = Literal["auto", "mean", "off", "full"]
#: What one UNet call applies in mixed attention (``auto`` resolved against the prompt).
AdaIN = Literal["off", "mean", "full"]
SelfAttentionMode = Literal["mixed", "mutual", "independent"]

ADAIN_CHOICES: tuple[str, ...] = ("auto", "mean", "off", "full")
ADAIN_APPLIED: tuple[str, ...] = ("off", "mean", "full")
#: ``mixed``: the paper; ``mutual`` (MasaCtrl) and ``independent`` (plain self-attention): its ablations.
SELF_ATTENTION_CHOICES: tuple[str, ...] = ("mixed", "mutual", "independent")

DEFAULT_ADAIN: AdaINChoice = "auto"
DEFAULT_SELF_ATTENTION: SelfAttentionMode = "mixed"
DEFAULT_WINDOW: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class NumberRange:
    """A numeric control: its argument name, what people call it, its default and its closed range."""

    name: str
    label: str
    default: float
    minimum: float
    maximum: float

    def check(self, value: float) -> float:
        """``value`` when it lies in the range, else :class:`UserInputError` naming the range."""
        if isinstance(value, bool) or not self.minimum <= value <= self.maximum:
            raise UserInputError(f"{self.label} must be between {self.minimum:g} and {self.maximum:g}, got {value!r}")
        return value


#: Denoising steps (the paper: 30); a model's scheduler may take fewer (``generation.ModelLimits``).
STEPS = NumberRange("num_inference_steps", "steps", 30, 1, 1000)
#: Classifier-free guidance scale (the paper: 5).
GUIDANCE = NumberRange("guidance_scale", "guidance", 5.0, 0.0, 50.0)
#: Weight of the image cross-attention (0: the base model).
ID_SCALE = NumberRange("id_scale", "ID scale", 1.0, 0.0, 5.0)

DEFAULT_STEPS = int(STEPS.default)
DEFAULT_GUIDANCE = GUIDANCE.default
DEFAULT_ID_SCALE = ID_SCALE.default

_ADAIN_ALIASES: dict[Any, str] = {True: "mean", False: "off"}


def check_adain(value: Any) -> AdaINChoice:
    """The canonical spelling of an ``adain`` value: one of :data:`ADAIN_CHOICES` (``True``/``False`` are
    accepted for ``mean``/``off``, as the Python API always took them)."""
    if isinstance(value, bool):
        return _ADAIN_ALIASES[value]  # type: ignore[return-value]
    if isinstance(value, str) and value in ADAIN_CHOICES:
        return value  # type: ignore[return-value]
    raise UserInputError(f"adain must be one of {', '.join(ADAIN_CHOICES)} (or True/False), got {value!r}")


def check_applied_adain(value: Any) -> AdaIN:
    """An AdaIN mode for one call: ``off``, ``mean`` or ``full`` (``auto`` must be resolved first)."""
    mode = check_adain(value)
    if mode == "auto":
        raise UserInputError("adain='auto' is resolved against the prompt (resolve_adain) before a UNet call")
    return mode  # type: ignore[return-value]


def resolve_adain(value: Any, prompts: Sequence[str]) -> AdaIN:
    """The AdaIN mode a call applies: ``auto`` is AdaIN-mean when a prompt names a style (off for none, as with
    ``prompt_embeds``, which carry no text to read), the others as they are."""
    from .style_prompts import names_style

    mode = check_adain(value)
    if mode == "auto":
        return "mean" if any(names_style(p) for p in prompts) else "off"
    return mode  # type: ignore[return-value]


def check_self_attention(value: Any) -> SelfAttentionMode:
    if value not in SELF_ATTENTION_CHOICES:
        raise UserInputError(f"self_attention must be one of {', '.join(SELF_ATTENTION_CHOICES)}, got {value!r}")
    return value


def check_window(name: str, window: Iterable[float]) -> tuple[float, float]:
    """A ``(start, end)`` step window as fractions of the denoising (``mixed_attention_window``, ``id_window``)."""
    try:
        start, end = (float(w) for w in window)
    except (TypeError, ValueError):
        raise UserInputError(f"{name} must be a (start, end) pair of fractions, got {window!r}") from None
    if not 0.0 <= start <= end <= 1.0:
        raise UserInputError(
            f"{name} must be (start, end) fractions of the denoising with 0 <= start <= end <= 1, got {window}"
        )
    return start, end


#: The pipeline arguments :func:`check_method` reads.
METHOD_CONTROLS: tuple[str, ...] = (
    "num_inference_steps", "guidance_scale", "id_scale", "adain", "self_attention", "mixed_attention_window",
    "id_window",
)  # fmt: skip


def check_method(
    *,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    id_scale: float = DEFAULT_ID_SCALE,
    adain: Any = DEFAULT_ADAIN,
    self_attention: Any = DEFAULT_SELF_ATTENTION,
    mixed_attention_window: Iterable[float] = DEFAULT_WINDOW,
    id_window: Iterable[float] = DEFAULT_WINDOW,
) -> dict[str, Any]:
    """Every method control checked in one call, in their canonical spellings (the pipeline's, by argument name)."""
    return {
        "num_inference_steps": int(STEPS.check(num_inference_steps)),
        "guidance_scale": GUIDANCE.check(guidance_scale),
        "id_scale": ID_SCALE.check(id_scale),
        "adain": check_adain(adain),
        "self_attention": check_self_attention(self_attention),
        "mixed_attention_window": check_window("mixed_attention_window", mixed_attention_window),
        "id_window": check_window("id_window", id_window),
    }


def face_backend_choices() -> tuple[str, ...]:
    """The ``--face-backend`` choices: ``auto`` and the registered backends that read photos (plugins'
    included; ``precomputed`` needs its file, given as ``--embedding``)."""
    from .faces.factory import face_backend_names

    return ("auto", *face_backend_names(photos_only=True))
