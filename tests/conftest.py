from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import FACE_DIM, save_tiny_base_model  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

#: The core's tests run without the miniature world (issue 14): where ``infinite_id/world/`` is absent, the tests
#: marked ``world`` (they use its default model or its ``mini`` face backend) and those under tests/world/ skip.
WORLD_PRESENT = importlib.util.find_spec("infinite_id.world") is not None


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if not WORLD_PRESENT and collection_path.name == "world" and collection_path.parent == Path(__file__).parent:
        return True
    return None


def pytest_collection_modifyitems(config, items) -> None:
    if WORLD_PRESENT:
        return
    skip = pytest.mark.skip(reason="needs the miniature world (infinite_id/world/), absent from this tree")
    for item in items:
        if item.get_closest_marker("world") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def world_quick_weights(tmp_path_factory) -> Path:
    """Every miniature-world stage, adapters included, trained for two steps (the retrain command's ``--quick``),
    once per test session: real files in the shipped layout, untrained numbers."""
    from infinite_id.world.trainers.retrain import retrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world_quick_weights")
    retrain(root, quick=True, progress=False)
    torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny SD 1.5 and SDXL base models saved in diffusers layout, once per test session."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: save_tiny_base_model(root / family, family) for family in ("sd15", "sdxl")}


@pytest.fixture
def make_pipe(tiny_model_dirs):
    """Load a tiny base model through the real loader and give it a fresh (seeded) adapter."""
    from infinite_id.faces.base import FaceEncoderInfo
    from infinite_id.models.projectors import IdentityProjectionConfig
    from infinite_id.pipelines import InfiniteIDPipeline

    def _make(family: str = "sd15", adapter: bool = True, seed: int = 0, **projection_kwargs):
        pipe = InfiniteIDPipeline.from_pretrained(tiny_model_dirs[family])
        pipe.set_progress_bar_config(disable=True)
        if adapter:
            torch.manual_seed(seed)
            config = IdentityProjectionConfig(
                cross_attention_dim=pipe.unet.config.cross_attention_dim,
                face_dim=FACE_DIM,
                clip_dim=pipe.image_encoder.config.hidden_size,
                clip_num_tokens=17,
                **projection_kwargs,
            )
            pipe.init_adapter(config, FaceEncoderInfo(backend="precomputed", model="test", dim=FACE_DIM))
        return pipe

    return _make


@pytest.fixture
def reference():
    """A reference 'photo' (already an aligned crop) and its face embedding."""
    rng = np.random.RandomState(7)
    image = Image.fromarray((rng.rand(48, 48, 3) * 255).astype("uint8"))
    return image, rng.randn(FACE_DIM).astype("float32")
