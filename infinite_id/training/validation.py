"""Validation images during training: the current adapter in the real inference pipeline.

The references are the first photos of the first identities in the cache, or in the first shard when training
from shards (their aligned crops and embeddings), drawn with every validation prompt at a fixed seed, so images
at different steps are comparable.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..identity import IdentityFeatures
from .config import ValidationSection
from .data import TrainCache

__all__ = ["pick_references", "render_validation", "shard_references"]

#: A validation reference: the aligned face crop and its face embedding, shape ``(1, dim)``.
Reference = tuple[Image.Image, torch.Tensor]


def pick_references(cache: TrainCache, n: int) -> list[Reference]:
    """The first photo of each of the first ``n`` identities of the cache."""
    seen, picked = set(), []
    for i, entry in enumerate(cache.entries):
        if len(picked) == n:
            break
        if entry.identity not in seen:
            seen.add(entry.identity)
            with Image.open(cache.crop_path(entry)) as crop:
                picked.append((crop.convert("RGB"), cache.face_embeds[i : i + 1].float()))
    return picked


def shard_references(index, n: int) -> list[Reference]:
    """The first photo of each of the first ``n`` identities of the first readable shard (a ``ShardIndex``)."""
    from .shards import _embedding_from_bytes, _parse, read_shard

    seen, picked = set(), []
    for shard in index.shards:
        try:
            for raw in read_shard(index.path(shard)):
                if len(picked) == n:
                    return picked
                sample = _parse(raw)
                if sample.identity not in seen:
                    seen.add(sample.identity)
                    crop = Image.open(io.BytesIO(sample.crop)).convert("RGB")
                    picked.append((crop, _embedding_from_bytes(sample.embedding)[None].float()))
        except Exception:  # a damaged shard is reported by the training stream; look in the next one
            continue
        if len(picked) == n:
            break
    return picked


@torch.no_grad()
def render_validation(
    pipe, references: list[Reference], cfg: ValidationSection, resolution: int, autocast=None
) -> list[list[Image.Image]]:
    """One row per reference: its crop, then one image per prompt."""
    device = pipe.unet.device
    size = cfg.resolution or resolution
    rows = []
    for crop, face_embeds in references:
        features = IdentityFeatures(
            face_embeds=face_embeds,
            clip_hidden=pipe.identity_encoder.clip_hidden([crop]),
        )
        row = [crop.resize((size, size))]
        for prompt in cfg.prompts:
            generator = torch.Generator(device=device).manual_seed(cfg.seed)
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = pipe(
                    prompt,
                    id_features=features,
                    num_inference_steps=cfg.num_inference_steps,
                    guidance_scale=cfg.guidance_scale,
                    height=size,
                    width=size,
                    generator=generator,
                )
            row.append(out.images[0])
        rows.append(row)
    return rows


def save_grid(rows: list[list[Image.Image]], path: str | Path) -> np.ndarray:
    """Write the rows as one PNG; returns the grid as an ``(H, W, 3)`` uint8 array (for TensorBoard)."""
    w, h = rows[0][0].size
    grid = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)))
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            grid.paste(image.resize((w, h)), (x * w, y * h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return np.asarray(grid)
