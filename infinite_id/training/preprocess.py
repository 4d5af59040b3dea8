"""``train-prepare``: run the face models once over a data source and write the training cache.

For every photo: check that the target image decodes, get its face embedding and aligned face crop (from a face
analyzer, or from a precomputed embedding in the source), and store them. A bad entry (missing or corrupt file,
no face, face too small, malformed manifest line, wrong embedding size) is skipped and reported in
``skipped.jsonl``; it never stops the run. The cache is written to a temporary folder and renamed at the end.

Precomputed embeddings are for data whose face vectors are already known (a dataset that ships them, or the
miniature world's renderer, whose synthetic faces a real detector may not find). They must come from the face
encoder named by ``face_encoder`` (stored in the cache and then in the trained adapter); without an aligned crop
in the source, the photo's centre square stands in for the CLIP branch's face crop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

from .data import CACHE_FORMAT, CACHE_VERSION, SourceEntry, iter_source

logger = logging.getLogger(__name__)

#: Errors that make one entry unusable (files, decoding, face detection: ``FaceError`` is a ``ValueError``).
ENTRY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)

__all__ = ["PrepareReport", "prepare_cache"]


@dataclass
class PrepareReport:
    out: Path
    kept: int = 0
    identities: int = 0
    single_photo_identities: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def reasons(self) -> Counter:
        return Counter(s["reason"] for s in self.skipped)

    def summary(self) -> str:
        text = (
            f"{self.kept} photos of {self.identities} identities cached in {self.out} "
            f"({self.single_photo_identities} identities with a single photo)"
        )
        if self.skipped:
            parts = ", ".join(f"{n} {reason}" for reason, n in self.reasons().most_common())
            text += f"; skipped {len(self.skipped)}: {parts} (details in {self.out / 'skipped.jsonl'})"
        return text


def _check_embedding(vector, where: str) -> np.ndarray:
    if isinstance(vector, str):  # .npy or .safetensors, read without unpickling
        from ..faces.precomputed import load_embeddings

        array = load_embeddings(vector)[0]
        if array.ndim == 2 and array.shape[0] != 1:
            raise ValueError(f"{vector} holds {array.shape[0]} embeddings; give one per photo")
    else:
        array = vector
    array = np.asarray(array, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"the embedding of {where} is empty or holds NaN/inf")
    norm = np.linalg.norm(array)
    if norm < 1e-12:
        raise ValueError(f"the embedding of {where} is all zeros")
    return (array / norm).astype(np.float32)


def _open_rgb(path: str) -> Image.Image:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with Image.open(path) as img:
        img.load()
        return ImageOps.exif_transpose(img).convert("RGB")


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return "missing file"
    if name == "NoFaceError":
        return "no face"
    if name == "FaceTooSmallError":
        return "face too small"
    if name == "FaceIndexError":
        return "face index out of range"
    if isinstance(exc, (OSError, SyntaxError, EOFError, Image.DecompressionBombError)) or name == "InvalidImageError":
        return "unreadable image"
    return "bad entry"


def prepare_cache(
    source: str | Path,
    out: str | Path,
    analyzer=None,
    face_encoder=None,
    crop_size: int = 224,
    overwrite: bool = False,
    progress: bool = False,
) -> PrepareReport:
    """Write the training cache for ``source`` into ``out``.

    Args:
        source: a folder per identity or a ``.jsonl`` manifest (see :mod:`infinite_id.training.data`).
        analyzer: an ``infinite_id.faces.FaceAnalyzer``; used for photos without a precomputed embedding.
        face_encoder: ``FaceEncoderInfo`` of precomputed embeddings (default: the analyzer's).
        crop_size: side of the stored aligned crops.
    """
    out = Path(out)
    if (out / "cache.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a training cache; pass overwrite=True (--overwrite) to rebuild")
    if analyzer is None and face_encoder is None:
        raise ValueError("give a face analyzer, or face_encoder=FaceEncoderInfo(...) for precomputed embeddings")
    info = face_encoder if face_encoder is not None else analyzer.info
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "crops").mkdir(parents=True)

    report = PrepareReport(out=out)
    entries: list[dict[str, Any]] = []
    embeds: list[np.ndarray] = []
    listing = iter_source(source)
    if progress:
        from tqdm.auto import tqdm

        listing = tqdm(listing, desc="preparing", unit="photo")
    for entry in listing:
        try:
            if entry.problem:
                raise ValueError(entry.problem)
            crop, embedding, size = _process(entry, analyzer, crop_size)
            if embedding.shape[0] != info.dim:
                raise ValueError(
                    f"embedding has {embedding.shape[0]} dimensions, the face encoder {info.describe()} has {info.dim}"
                )
        except ENTRY_ERRORS as exc:
            reason = "bad entry" if entry.problem else _reason(exc)
            report.skipped.append(
                {
                    "where": entry.where,
                    "identity": entry.identity,
                    "image": entry.image,
                    "reason": reason,
                    "error": str(exc),
                }
            )
            logger.warning("skipping %s: %s (%s)", entry.where, reason, exc)
            continue
        index = len(entries)
        crop_name = f"crops/{index:08d}.png"
        crop.save(tmp / crop_name)
        entries.append(
            {
                "index": index,
                "identity": entry.identity,
                "image": str(Path(entry.image).resolve()),
                "caption": entry.caption,
                "crop": crop_name,
                "width": size[0],
                "height": size[1],
            }
        )
        embeds.append(embedding)

    counts = Counter(e["identity"] for e in entries)
    report.kept = len(entries)
    report.identities = len(counts)
    report.single_photo_identities = sum(1 for n in counts.values() if n == 1)
    with (tmp / "entries.jsonl").open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    with (tmp / "skipped.jsonl").open("w", encoding="utf-8") as f:
        for s in report.skipped:
            f.write(json.dumps(s) + "\n")
    matrix = torch.from_numpy(np.stack(embeds)) if embeds else torch.zeros(0, info.dim)
    save_file({"face_embeds": matrix.contiguous()}, str(tmp / "embeddings.safetensors"))
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "source": str(source),
        "face_encoder": info.to_dict(),
        "crop_size": crop_size,
        "photos": report.kept,
        "identities": report.identities,
        "single_photo_identities": report.single_photo_identities,
        "skipped": len(report.skipped),
    }
    (tmp / "cache.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    logger.info(report.summary())
    return report


def _process(entry: SourceEntry, analyzer, crop_size: int):
    image = _open_rgb(entry.image)
    size = image.size
    if entry.embedding is not None:
        embedding = _check_embedding(entry.embedding, entry.where)
        crop = _open_rgb(entry.crop) if entry.crop else image
        crop = _center_crop(crop, crop_size) if crop.size != (crop_size, crop_size) else crop
        return crop, embedding, size
    if analyzer is None:
        raise ValueError("no precomputed embedding and no face analyzer to compute one")
    found = analyzer.identity(entry.image, face_index=entry.face_index, clip_crop_size=crop_size)
    return found.clip_crop.convert("RGB"), np.asarray(found.embedding, dtype=np.float32).reshape(-1), size
