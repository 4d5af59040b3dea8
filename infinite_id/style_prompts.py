"""Prompt helpers: does a prompt name an artistic style (the rule behind ``adain="auto"``)?"""

from __future__ import annotations

import re

# Styles named in the paper's figures plus common ones; a prompt that says "... style" always counts.
STYLE_TERMS: tuple[str, ...] = (
    "style",
    "anime",
    "manga",
    "cartoon",
    "comic",
    "disney",
    "pixar",
    "ghibli",
    "ukiyo-e",
    "ukiyoe",
    "painting",
    "painted",
    "watercolor",
    "watercolour",
    "oil paint",
    "sketch",
    "drawing",
    "pencil",
    "charcoal",
    "illustration",
    "pop art",
    "pixel art",
    "line art",
    "lineart",
    "cubism",
    "cubist",
    "impressionis",
    "expressionis",
    "art nouveau",
    "low poly",
    "claymation",
    "3d render",
    "vector art",
    "cel shad",
)

_STYLE_RE = re.compile(r"\b(" + "|".join(re.escape(t) for t in STYLE_TERMS) + r")", re.IGNORECASE)


def names_style(prompt: str) -> bool:
    """True when ``prompt`` asks for an artistic style ("a man in comic book style", "anime", ...)."""
    return bool(_STYLE_RE.search(prompt))
