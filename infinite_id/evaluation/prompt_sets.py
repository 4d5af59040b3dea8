"""Evaluation prompt sets: the paper's raw-photo and style prompts, built in, or your own from a file.

A prompt is a template with an optional ``{class_word}`` slot (``"a photo of a {class_word} ... "``), filled per
identity with its class word ("man", "woman", "person"...). The built-in sets are the prompts of the paper's
figures (paper-spec section 3.5), with the subject replaced by the slot; the paper reports raw-photo and style
generation separately, so they are separate sets.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingInputError, UserInputError

__all__ = ["BUILTIN_PROMPT_SETS", "PromptSet", "load_prompt_file", "resolve_prompt_sets"]

CLASS_WORD = "class_word"


@dataclass(frozen=True)
class PromptSet:
    """A named list of prompt templates."""

    name: str
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise UserInputError(f"prompt set name {self.name!r} must be letters, digits, '_', '-' or '.'")
        if not self.templates:
            raise UserInputError(f"prompt set {self.name!r} is empty")
        for template in self.templates:
            _check_template(template, self.name)

    def render(self, class_word: str) -> list[str]:
        """The prompts for one identity."""
        return [t.format(**{CLASS_WORD: class_word}) for t in self.templates]

    def __len__(self) -> int:
        return len(self.templates)

    def to_dict(self) -> dict:
        return {"name": self.name, "templates": list(self.templates)}


def _check_template(template: str, source: str) -> None:
    if not template.strip():
        raise UserInputError(f"{source}: empty prompt")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UserInputError(f"{source}: prompt {template!r} has unbalanced braces ({exc})") from exc
    unknown = [f for f in fields if f != CLASS_WORD]
    if unknown:
        raise UserInputError(
            f"{source}: prompt {template!r} has unknown slot(s) {unknown}; the only slot is {{{CLASS_WORD}}}"
        )


RAW_PHOTO = PromptSet(
    "raw",
    (
        "a photo of a {class_word} wearing a brown clothing, in the snow",
        "a photo of a {class_word} wearing a yellow shirt, in the living room",
        "a photo of a {class_word} wearing a colorful shirt, on the beach",
        "a photo of a {class_word} wearing a yellow sweater, in the time square",
        "a photo of a {class_word} is running, facing and smiling to the camera",
        "a photo of a {class_word} wearing a shirt, in the forest",
    ),
)

STYLE = PromptSet(
    "style",
    (
        "a {class_word} in comic book style",
        "a {class_word} in Disney cartoon style",
        "a {class_word} in oil painting style",
        "a {class_word} in Ghibli animation style",
        "a {class_word} in Ukiyo-e Painting style",
        "a {class_word} in watercolor painting style",
        "a {class_word} in anime style",
    ),
)

BUILTIN_PROMPT_SETS: dict[str, PromptSet] = {"raw": RAW_PHOTO, "style": STYLE}


def load_prompt_file(path: str | Path) -> list[PromptSet]:
    """Prompt sets from a file.

    * ``.txt``: one prompt per line; blank lines and ``#`` comments are skipped; one set named after the file.
    * ``.json``: a list of prompts (one set named after the file) or ``{"set name": [prompts], ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"prompt file {path} does not exist")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem) or "prompts"
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(data, list):
            data = {name: data}
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
        ):
            raise UserInputError(f"{path}: expected a list of prompts or an object of named prompt lists")
        return [PromptSet(str(k), tuple(v)) for k, v in data.items()]
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = tuple(line for line in lines if line and not line.startswith("#"))
    if not prompts:
        raise UserInputError(f"{path} holds no prompts")
    return [PromptSet(name, prompts)]


def resolve_prompt_sets(specs: list[str]) -> list[PromptSet]:
    """Turn CLI specs into prompt sets: ``raw``, ``style``, ``paper`` (both) or a file path."""
    sets: list[PromptSet] = []
    for spec in specs:
        if spec == "paper":
            sets += [RAW_PHOTO, STYLE]
        elif spec in BUILTIN_PROMPT_SETS:
            sets.append(BUILTIN_PROMPT_SETS[spec])
        elif Path(spec).exists():
            sets += load_prompt_file(spec)
        else:
            raise UserInputError(
                f"unknown prompt set {spec!r}: use {', '.join([*BUILTIN_PROMPT_SETS, 'paper'])} or a .txt/.json file"
            )
    names = [s.name for s in sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserInputError(f"prompt set names must be unique, got {duplicates} more than once")
    return sets
