"""The methods an evaluation compares: named presets of Infinite-ID pipeline arguments.

Each preset is one row of the paper's ablation table (section 4.3) or a baseline that the two-stream design gives
for free. Presets that need the same pipeline call share it (see :meth:`Method.call_key`): the base-model row
is the text stream of the full Infinite-ID call, so it costs nothing extra.

* ``infinite-id``: the paper; two streams, mixed attention, AdaIN-mean when the prompt names a style.
* ``no-mixed-attention``: paper ablation "w/o mixed attention"; the identity stream alone, its
  cross-attention summing text and ID, plain self-attention (the math and cost of IP-Adapter).
* ``mutual-attention``: paper ablation; identity-stream queries over the text stream's keys/values only.
* ``no-adain``: mixed attention without AdaIN-mean, even for style prompts.
* ``full-adain``: mixed attention with full AdaIN (mean and std) in place of AdaIN-mean.
* ``identity-only``: the identity stream conditioned on the identity alone (empty prompt), as it was trained:
  the floor of CLIP-T and the ceiling of ID similarity.
* ``base-model``: the text stream, i.e. the unmodified base model on the prompt with no identity (it shares the
  ``infinite-id`` call).
* ``infinite-id-fast``: the fast preset (``infinite_id.sampling.FAST_PRESET``): mixed attention over the first
  fifth of the denoising, the text stream stopped after it. Not in the default set (it is a speed trade-off, not
  a paper row): name it with ``--methods``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..controls import METHOD_CONTROLS, check_method
from ..errors import UserInputError
from ..sampling import FAST_PRESET, check_text_stream

__all__ = ["DEFAULT_METHODS", "METHODS", "Method", "resolve_methods"]


@dataclass(frozen=True)
class Method:
    """A named way to call the pipeline.

    Args:
        name: the id used on the command line and in result files.
        label: how the paper (or this project) calls it, for tables.
        pipeline_kwargs: the pipeline arguments that define the method (``self_attention``, ``adain``, ...).
        prompt_override: the prompt actually given to the pipeline, when it is not the evaluated prompt
            (CLIP-T is still measured against the evaluated prompt).
        stream: which output is the method's image: the identity stream (``"images"``) or the text stream.
        uses_identity_scale: whether the ID scale changes the image (the text stream ignores it).
    """

    name: str
    label: str
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)
    prompt_override: str | None = None
    stream: Literal["images", "text_images"] = "images"
    uses_identity_scale: bool = True

    def __post_init__(self) -> None:
        """A preset is checked by the controls' own validation when it is defined, not when a run reaches it."""
        check_method(**{k: v for k, v in self.pipeline_kwargs.items() if k in METHOD_CONTROLS})
        check_text_stream(self.pipeline_kwargs.get("text_stream", "exact"), self.stream == "text_images")

    def prompt_for(self, prompt: str) -> str:
        return prompt if self.prompt_override is None else self.prompt_override

    def call_key(self, prompt: str) -> str:
        """Methods with equal call keys are served by one pipeline call."""
        return json.dumps([self.prompt_for(prompt), sorted(self.pipeline_kwargs.items())], default=str)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "pipeline_kwargs": dict(self.pipeline_kwargs),
            "prompt_override": self.prompt_override,
            "stream": self.stream,
        }


#: The presets' values are the spellings of :mod:`infinite_id.controls`; ``adain`` off is written ``False``, its
#: accepted alias, because earlier evaluations recorded it so in settings.json, which a resumed run compares.
_FULL = {"self_attention": "mixed", "adain": "auto"}

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("infinite-id", "Infinite-ID (full)", dict(_FULL)),
        Method(
            "no-mixed-attention",
            "w/o mixed attention (identity stream, summed cross-attention)",
            {"self_attention": "independent", "adain": False},
        ),
        Method("mutual-attention", "mixed -> mutual attention", {"self_attention": "mutual", "adain": False}),
        Method("no-adain", "w/o AdaIN-mean", {"self_attention": "mixed", "adain": False}),
        Method("full-adain", "full AdaIN instead of AdaIN-mean", {"self_attention": "mixed", "adain": "full"}),
        Method(
            "identity-only",
            "identity stream only (no text)",
            {"self_attention": "independent", "adain": False},
            prompt_override="",
        ),
        Method(
            "base-model",
            "text stream (base model, no identity)",
            dict(_FULL),
            stream="text_images",
            uses_identity_scale=False,
        ),
        Method("infinite-id-fast", "Infinite-ID, fast preset", {**_FULL, **FAST_PRESET}),
    )
}

DEFAULT_METHODS: tuple[str, ...] = tuple(name for name in METHODS if name != "infinite-id-fast")


def resolve_methods(names: Iterable[str] | None) -> list[Method]:
    """Presets by name (``None``: all of them), in the order given, without duplicates."""
    if names is None:
        return [METHODS[n] for n in DEFAULT_METHODS]
    out: list[Method] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in METHODS:
            raise UserInputError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        if METHODS[name] not in out:
            out.append(METHODS[name])
    if not out:
        raise UserInputError("no method to evaluate")
    return out
