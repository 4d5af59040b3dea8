"""The miniature world: a procedural portrait renderer, captions and mini models that stand in for real photos
and pretrained weights offline. See docs/world.md.

Its folders follow its job: ``scene/`` (factors, render, captions, datasets), ``models/`` (the small models and
where their weights live), ``trainers/`` (one trainer a stage, and ``retrain``), ``experiments/`` (reproduce,
ceilings, the text probe, doc images). ``face_backend`` and ``default_model`` plug the world into the core through
the core's registries (entry points in ``pyproject.toml``); the core never imports the world.

The names below need only numpy and PIL; the model and training modules import torch, diffusers and transformers and
are imported explicitly. The module paths from before the subpackages (``infinite_id.world.retrain``, ...) still work
for one release (:mod:`infinite_id.world.legacy_paths`).
"""

from ..deprecation import renamed_names
from . import legacy_paths as _legacy_paths
from .scene.captions import ParsedPrompt, caption, parse_prompt, sample_mentions
from .scene.dataset import Example, build_dataset, read_manifest, sample_example
from .scene.factors import (
    EVAL_IDENTITIES,
    TRAIN_IDENTITIES,
    IdentityFactors,
    Nuisance,
    Semantics,
    identity_from_id,
    identity_split,
)
from .scene.render import Layout, render, render_with_layout

_legacy_paths.install()

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
