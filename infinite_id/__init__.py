"""Infinite-ID: identity-preserved personalization via ID-semantics decoupling (ECCV 2024).

The heavy names are imported lazily so that ``import infinite_id`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "InfiniteIDPipeline": "infinite_id.pipelines",
    "InfiniteIDPipelineOutput": "infinite_id.pipelines",
    "InfiniteIDStableDiffusionPipeline": "infinite_id.pipelines",
    "InfiniteIDStableDiffusionXLPipeline": "infinite_id.pipelines",
    "IdentityProjection": "infinite_id.models.projectors",
    "IdentityProjectionConfig": "infinite_id.models.projectors",
    "IdentityFeatures": "infinite_id.identity",
    "combine_tokens": "infinite_id.identity",
    "interpolate_identities": "infinite_id.identity",
    "AdapterMetadata": "infinite_id.adapter",
    "AdapterError": "infinite_id.adapter",
    "ClipEncoderInfo": "infinite_id.adapter",
    "adain_mean": "infinite_id.ops",
    "mixed_attention": "infinite_id.ops",
}

__all__ = ["__version__", *_EXPORTS]

# Modules renamed in this release keep their old paths for one release (infinite_id.deprecation.MOVED_MODULES).
from .deprecation import MOVED_MODULES as _MOVED_MODULES  # noqa: E402
from .deprecation import install_moved_modules as _install_moved_modules  # noqa: E402

_install_moved_modules(_MOVED_MODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'infinite_id' has no attribute {name!r}")
