from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; two threads spin against each other on a busy 2-core machine
    (measured: a 2-step tiny pipeline call 0.2 s on one thread, 8 s on two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def save_tiny_adapter_model() -> Callable[..., tuple[Path, Path, Any]]:
    """A factory: save a tiny SD 1.5 model and a seeded Infinite-ID adapter for the insightface buffalo_s encoder
    (512-d) under a folder, as a user would have them on disk; returns ``(model folder, adapter file, pipe)``.
    ``record_base_model`` writes the model's path into the adapter's training record (which must not leak)."""

    def save(
        root: Path, model: str = "sd15", adapter: str = "adapter.safetensors", record_base_model: bool = False
    ) -> tuple[Path, Path, Any]:
        from tiny_models import save_tiny_base_model

        from infinite_id.faces.base import FaceEncoderInfo
        from infinite_id.models.projectors import IdentityProjectionConfig
        from infinite_id.pipelines import InfiniteIDPipeline

        folder = save_tiny_base_model(root / model, "sd15")
        pipe = InfiniteIDPipeline.from_pretrained(folder)
        torch.manual_seed(0)
        config = IdentityProjectionConfig(cross_attention_dim=32, face_dim=512, clip_dim=32, clip_num_tokens=17)
        pipe.init_adapter(config, FaceEncoderInfo("insightface", "buffalo_s", 512))
        training = {"base_model": str(folder)} if record_base_model else None
        return folder, pipe.save_adapter(root / adapter, training=training), pipe

    return save
