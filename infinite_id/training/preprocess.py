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
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

from ..errors import MissingInputError, UserInputError
from ..outputs import check_output_dir, has_json_marker, new_temp_dir, replace_dir
from .data import CACHE_FORMAT, CACHE_VERSION, SourceEntry, iter_source

logger = logging.getLogger(__name__)

#: Errors that make one entry unusable (files, decoding, face detection: ``FaceError`` is a ``ValueError``).
ENTRY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)

__all__ = ["PrepareReport", "is_cache_dir", "prepare_cache"]

#: Sides of the stored face crops that make sense (the CLIP encoders read 224 px; below 16 px nothing is left).
MIN_CROP_SIZE, MAX_CROP_SIZE = 16, 1024


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
            raise UserInputError(f"{vector} holds {array.shape[0]} embeddings; give one per photo")
    else:
        array = vector
    array = np.asarray(array, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise UserInputError(f"the embedding of {where} is empty or holds NaN/inf")
    norm = np.linalg.norm(array)
    if norm < 1e-12:
        raise UserInputError(f"the embedding of {where} is all zeros")
    return (array / norm).astype(np.float32)


def _open_rgb(path: str) -> Image.Image:
    if not Path(path).is_file():
        raise MissingInputError(f"no such file: {path}")
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
    if analyzer is None and face_encoder is None:
        raise UserInputError("give a face analyzer, or face_encoder=FaceEncoderInfo(...) for precomputed embeddings")
    if not MIN_CROP_SIZE <= crop_size <= MAX_CROP_SIZE:
        raise UserInputError(f"crop size must be {MIN_CROP_SIZE} to {MAX_CROP_SIZE} pixels, got {crop_size}")
    check_output_dir(
        out,
        what="--out",
        command="infinite-id train-prepare",
        is_own=is_cache_dir,
        inputs=source_paths(source),
        overwrite=overwrite,
    )
    info = face_encoder if face_encoder is not None else analyzer.info
    tmp = new_temp_dir(out)
    try:
        report = _write_cache(source, out, tmp, analyzer, info, crop_size, progress)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(report.summary())
    return report


def is_cache_dir(folder: Path) -> bool:
    """True when ``folder`` is a cache written by :func:`prepare_cache` (its ``cache.json`` says so)."""
    return has_json_marker("cache.json", "format", CACHE_FORMAT)(folder)


def source_paths(source: str | Path) -> list[Path]:
    """Every file and folder a source reads: the folder or manifest itself and each photo, crop and embedding."""
    source = Path(source)
    paths = [source]
    for entry in iter_source(source):
        paths += [Path(p) for p in (entry.image, entry.crop, entry.embedding) if isinstance(p, str) and p]
    return paths


def _write_cache(source, out: Path, tmp: Path, analyzer, info, crop_size: int, progress: bool) -> PrepareReport:
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
                raise UserInputError(entry.problem)
            crop, embedding, size, face_box = _process(entry, analyzer, crop_size)
            if embedding.shape[0] != info.dim:
                raise UserInputError(
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
                "face_box": face_box,
            }
        )
        embeds.append(embedding)

    if not entries:
        reasons = Counter(s["reason"] for s in report.skipped).most_common()
        detail = ", ".join(f"{n} {reason}" for reason, n in reasons) or "it lists no photo"
        raise UserInputError(f"no usable photo in {source} ({detail}); nothing was written")
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
    (tmp / "cache.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")  # the marker: written last
    return report


def _box_fractions(box, size: tuple[int, int]) -> list[float] | None:
    """A pixel box (x0, y0, x1, y1) in an image of ``size`` = (w, h) as fractions of it, clipped; None if empty."""
    w, h = size
    x0, x1 = (min(max(float(v) / w, 0.0), 1.0) for v in (box[0], box[2]))
    y0, y1 = (min(max(float(v) / h, 0.0), 1.0) for v in (box[1], box[3]))
    return [round(v, 6) for v in (x0, y0, x1, y1)] if x1 > x0 and y1 > y0 else None


def _process(entry: SourceEntry, analyzer, crop_size: int):
    """(CLIP crop, embedding, photo size, face box as fractions of the photo or None) of one listed photo."""
    image = _open_rgb(entry.image)
    size = image.size
    if entry.embedding is not None:
        embedding = _check_embedding(entry.embedding, entry.where)
        crop = _open_rgb(entry.crop) if entry.crop else image
        crop = _center_crop(crop, crop_size) if crop.size != (crop_size, crop_size) else crop
        face_box = _box_fractions(entry.face_box, size) if entry.face_box is not None else None
        return crop, embedding, size, face_box
    if analyzer is None:
        raise UserInputError("no precomputed embedding and no face analyzer to compute one")
    found = analyzer.identity(entry.image, face_index=entry.face_index, clip_crop_size=crop_size)
    face_box = _box_fractions(found.face.box, found.image_size) if found.image_size is not None else None
    embedding = np.asarray(found.embedding, dtype=np.float32).reshape(-1)
    return found.clip_crop.convert("RGB"), embedding, size, face_box
