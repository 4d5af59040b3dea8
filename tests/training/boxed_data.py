"""A generated identity dataset whose photos carry face boxes (shared by the face-loss and identity-loss tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tiny_models import FACE_DIM

from infinite_id.faces.base import FaceEncoderInfo

TEST_ENCODER = FaceEncoderInfo("precomputed", "test", FACE_DIM)


def write_boxed_dataset(root: Path, identities: int = 4, photos: int = 3, width: int = 48, height: int = 40) -> Path:
    """Photos with a bright "face" rectangle whose pixel box each manifest line gives as ``face_box``."""
    rng = np.random.RandomState(0)
    lines = []
    for k in range(identities):
        vector = rng.randn(FACE_DIM)
        for j in range(photos):
            pixels = rng.randint(0, 80, (height, width, 3)).astype("uint8")
            x0, y0 = 8 + 2 * j, 6 + k
            x1, y1 = x0 + 16, y0 + 20
            pixels[y0:y1, x0:x1] = 230
            path = root / f"id{k}" / f"{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            lines.append(
                {
                    "identity": f"id{k}",
                    "image": f"id{k}/{j}.png",
                    "caption": f"photo {j} of person {k}",
                    "embedding": (vector + 0.05 * rng.randn(FACE_DIM)).round(5).tolist(),
                    "face_box": [x0, y0, x1, y1],
                }
            )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest
