"""Fixtures of the evaluation tests: tiny random CLIP / DINO models and a deterministic pixel 'face encoder'."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import CLIPImageProcessor, Dinov2Config, Dinov2Model

sys.path.insert(0, str(Path(__file__).parent))

import eval_fakes  # noqa: E402
from eval_fakes import PixelFaceAnalyzer, noise_image, smooth_image  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip():
    return eval_fakes.tiny_clip_parts()


@pytest.fixture(scope="session")
def tiny_dino():
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return Dinov2Model(config).eval(), processor


@pytest.fixture
def eval_face_analyzer() -> PixelFaceAnalyzer:
    return eval_fakes.eval_face_analyzer()


@pytest.fixture
def images():
    """Factories for test images: ``images.smooth(seed)`` (a 'photo') and ``images.noise(seed)``."""

    class _Images:
        smooth = staticmethod(smooth_image)
        noise = staticmethod(noise_image)

    return _Images


@pytest.fixture
def pixel_analyzer():
    """``pixel_analyzer(info, seed)`` builds a :class:`PixelFaceAnalyzer`."""
    return PixelFaceAnalyzer


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and CI's two cores are shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
