"""Test doubles for the evaluation tests, importable by module path (the CLI tests load them with
``python:eval_fakes:...``)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from infinite_id.clip_tokenizer import clip_tokenizer
from infinite_id.evaluation import ClipScorer
from infinite_id.faces.base import DetectedFace, FaceAnalyzer, FaceEncoderInfo


class PixelFaceAnalyzer(FaceAnalyzer):
    """A stand-in face encoder with real behaviour: it 'detects' a face in smooth images (neighbouring pixels
    correlate, as in photos) and none in pixel noise; the embedding is a fixed random projection of the pixels."""

    def __init__(self, info: FaceEncoderInfo, seed: int = 0) -> None:
        super().__init__(min_face_size=0.0)
        self._info = info
        self._projection = np.random.RandomState(seed).randn(16 * 16 * 3, info.dim)

    @property
    def info(self) -> FaceEncoderInfo:
        return self._info

    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        x = np.asarray(image.convert("L"), dtype=np.float64)
        a, b = x[:, :-1].ravel(), x[:, 1:].ravel()
        if a.std() < 1e-6 or np.corrcoef(a, b)[0, 1] < 0.5:
            return []
        w, h = image.size
        keypoints = np.array(
            [[0.3 * w, 0.4 * h], [0.7 * w, 0.4 * h], [0.5 * w, 0.55 * h], [0.35 * w, 0.75 * h], [0.65 * w, 0.75 * h]]
        )
        return [DetectedFace(box=(0, 0, w, h), keypoints=keypoints, score=1.0)]

    def _embed(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float64).ravel() / 255.0
        return (pixels - pixels.mean()) @ self._projection


def smooth_image(seed: int, size: int = 48) -> Image.Image:
    """A 'photo': low-frequency random colours, upsampled."""
    rng = np.random.RandomState(seed)
    small = Image.fromarray((rng.rand(4, 4, 3) * 255).astype("uint8"))
    return small.resize((size, size), Image.BICUBIC)


def noise_image(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype("uint8"))


def tiny_clip_parts():
    """A tiny random CLIPModel with the real tokenizer and a 32 px image processor."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config).eval(), clip_tokenizer(), processor


def tiny_clip_scorer() -> ClipScorer:
    model, tokenizer, processor = tiny_clip_parts()
    return ClipScorer(model, tokenizer=tokenizer, image_processor=processor)


def adapter_face_analyzer() -> PixelFaceAnalyzer:
    """The face encoder the tiny test adapters are made for (precomputed/test, 16-d)."""
    return PixelFaceAnalyzer(FaceEncoderInfo(backend="precomputed", model="test", dim=16))


def eval_face_analyzer() -> PixelFaceAnalyzer:
    """An evaluation face encoder independent of the adapter's."""
    return PixelFaceAnalyzer(FaceEncoderInfo(backend="pixels", model="eval", dim=32), seed=1)
