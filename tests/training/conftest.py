"""Fixtures for the training tests: a generated identity dataset, its cache, and tiny-model configs.

The generated "photos" are not faces, so no detector would find one: their face embeddings are precomputed
(one fixed random vector per identity plus a little per-photo noise) and given in the manifest, which is the
documented path for data with known embeddings. The detector path is covered separately on real photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import FACE_DIM

from infinite_id.training.config import config_from_dict


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from more threads, and oversubscribed cores stall OpenMP badly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each run builds its own Accelerator, as a separate process would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def write_identity_dataset(root: Path, identities: int = 4, photos: int = 3, size: int = 40, seed: int = 0) -> Path:
    """Folder per identity + ``manifest.jsonl``; each identity has its own colour scheme and embedding."""
    rng = np.random.RandomState(seed)
    lines = []
    for k in range(identities):
        base_colour = rng.randint(0, 255, 3)
        vector = rng.randn(FACE_DIM)
        for j in range(photos):
            pixels = np.clip(base_colour + rng.randn(size, size, 3) * 40, 0, 255).astype("uint8")
            pixels[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 255 - base_colour  # a "face"
            path = root / f"id{k}" / f"{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            embedding = (vector + 0.05 * rng.randn(FACE_DIM)).round(5).tolist()
            lines.append(
                {
                    "identity": f"id{k}",
                    "image": f"id{k}/{j}.png",
                    "caption": f"photo {j} of person {k}",
                    "embedding": embedding,
                }
            )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


@pytest.fixture(scope="session")
def identity_cache(tmp_path_factory) -> Path:
    from infinite_id.faces.base import FaceEncoderInfo
    from infinite_id.training.preprocess import prepare_cache

    root = tmp_path_factory.mktemp("identity_data")
    manifest = write_identity_dataset(root / "data")
    prepare_cache(manifest, root / "cache", face_encoder=FaceEncoderInfo("precomputed", "test", FACE_DIM))
    return root / "cache"


@pytest.fixture
def make_config(tiny_model_dirs, identity_cache, tmp_path):
    """A tiny training config; keyword overrides as ``{"train": {...}}`` sections."""

    def _make(family: str = "sd15", out: Path | None = None, **sections):
        data = {
            "model": {"pretrained": str(tiny_model_dirs[family])},
            "data": {"cache": str(identity_cache), "resolution": 32, "num_workers": 0},
            "train": {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-3, "seed": 0},
            "output": {
                "dir": str(out or tmp_path / "run"),
                "checkpoint_every": 0,
                "progress_bar": False,
                "tensorboard": False,
                "log_every": 1,
            },
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return config_from_dict(data)

    return _make


@pytest.fixture(scope="session")
def boxed_cache(tmp_path_factory) -> Path:
    """A cache of :func:`boxed_data.write_boxed_dataset`: every photo has a face box."""
    from boxed_data import TEST_ENCODER, write_boxed_dataset

    from infinite_id.training.preprocess import prepare_cache

    root = tmp_path_factory.mktemp("boxed")
    prepare_cache(write_boxed_dataset(root / "data"), root / "cache", face_encoder=TEST_ENCODER)
    return root / "cache"
