"""Validation images during training: the current adapter in the real inference pipeline.

The references are the first photos of the first identities in the cache (their cached crops and embeddings),
drawn with every validation prompt at a fixed seed, so images at different steps are comparable.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..identity import IdentityFeatures
from .config import ValidationSection
from .data import TrainCache

__all__ = ["pick_references", "render_validation"]


def pick_references(cache: TrainCache, n: int) -> list[int]:
    """Indices of the first photo of each of the first ``n`` identities."""
    seen, picked = set(), []
    for i, entry in enumerate(cache.entries):
        if entry.identity not in seen:
            seen.add(entry.identity)
            picked.append(i)
        if len(picked) == n:
            break
    return picked


@torch.no_grad()
def render_validation(
    pipe, cache: TrainCache, references: list[int], cfg: ValidationSection, resolution: int, autocast=None
) -> list[Image.Image]:
    """One row per reference: its crop, then one image per prompt."""
    device = pipe.unet.device
    size = cfg.resolution or resolution
    rows = []
    for index in references:
        entry = cache.entries[index]
        with Image.open(cache.crop_path(entry)) as crop:
            crop = crop.convert("RGB")
        features = IdentityFeatures(
            face_embeds=cache.face_embeds[index : index + 1].float(),
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
