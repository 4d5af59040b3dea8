"""The miniature world: a procedural portrait renderer, captions and mini models that stand in for real photos
and pretrained weights offline. See docs/world.md.

The names below need only numpy and PIL; the model and training modules (``configs``, ``face_model``,
``train_*``, ...) import torch, diffusers and transformers and are imported explicitly.
"""

from ..deprecation import renamed_names
from .captions import ParsedPrompt, caption, parse_prompt, sample_mentions
from .dataset import Example, build_dataset, read_manifest, sample_example
from .factors import (
    EVAL_IDENTITIES,
    TRAIN_IDENTITIES,
    IdentityFactors,
    Nuisance,
    Semantics,
    identity_from_id,
    identity_split,
)
from .render import Layout, render, render_with_layout

__all__ = [
    "EVAL_IDENTITIES",
    "TRAIN_IDENTITIES",
    "Example",
    "IdentityFactors",
    "Layout",
    "Nuisance",
    "ParsedPrompt",
    "Semantics",
    "build_dataset",
    "caption",
    "identity_from_id",
    "identity_split",
    "parse_prompt",
    "read_manifest",
    "render",
    "render_with_layout",
    "sample_example",
    "sample_mentions",
]


__getattr__ = renamed_names(__name__, {"Identity": "IdentityFactors"}, globals())  # deprecated alias, one release
