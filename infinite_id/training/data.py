"""Training data: sources (folder per identity, JSONL manifest), the preprocessed cache, and the pair dataset.

Source layouts (``infinite-id train-prepare`` reads either):

* folder per identity: ``ROOT/<identity>/<photo>.{jpg,jpeg,png,webp}``, with an optional caption in
  ``<photo>.txt`` and an optional precomputed face embedding in ``<photo>.npy``;
* JSONL manifest, one object per line: ``{"identity": ..., "image": ..., "caption": ...}``; relative image
  paths are relative to the manifest. Optional keys: ``"embedding"`` (a list of floats or a ``.npy`` path: a
  precomputed face embedding), ``"crop"`` (an aligned face crop to use with it) and ``"face_index"``.

The cache (written once by :mod:`infinite_id.training.preprocess`) holds every usable photo's face embedding
and aligned face crop, so face models never run in the training loop. :class:`IdentityPairDataset` reads it and
yields (reference, target) pairs: different photos of the same identity (the paper), or the same photo for
identities that only have one (counted and logged), or always the same photo in ``joint`` mode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file

from ..errors import MissingInputError, UserInputError
from .config import TrainingMode

logger = logging.getLogger(__name__)

CACHE_FORMAT = "infinite-id-train-cache"
CACHE_VERSION = 2  # 2: entries carry the target's face box (``face_box``)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

__all__ = [
    "CacheEntry",
    "EpochSampler",
    "IdentityPairDataset",
    "PairTransform",
    "SourceEntry",
    "TrainCache",
    "collate_pairs",
    "iter_source",
]


@dataclass
class SourceEntry:
    """One photo as listed by a data source, before preprocessing. ``problem`` marks an unusable listing."""

    identity: str
    image: str
    caption: str = ""
    embedding: Any = None
    crop: str | None = None
    face_index: int | None = None
    face_box: list[float] | None = None  # the face's box in the photo's pixels (x0, y0, x1, y1), if given
    where: str = ""
    problem: str | None = None


def _iter_folder(root: Path) -> Iterator[SourceEntry]:
    for identity_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(p for p in identity_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            caption_file = image.with_suffix(".txt")
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
            embedding_file = image.with_suffix(".npy")
            yield SourceEntry(
                identity=identity_dir.name,
                image=str(image),
                caption=caption,
                embedding=str(embedding_file) if embedding_file.is_file() else None,
                where=str(image),
            )


def _iter_manifest(path: Path) -> Iterator[SourceEntry]:
    base = path.parent
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            where = f"{path}:{line_no}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceEntry("", "", where=where, problem=f"invalid JSON: {exc}")
                continue
            if not isinstance(record, dict) or "identity" not in record or "image" not in record:
                yield SourceEntry("", "", where=where, problem='a manifest line needs "identity" and "image"')
                continue

            def resolve(p):
                return str(p if Path(p).is_absolute() else base / p)

            embedding = record.get("embedding")
            if isinstance(embedding, str):
                embedding = resolve(embedding)
            crop = record.get("crop")
            face_box = record.get("face_box")
            if face_box is not None and not _is_box(face_box):
                problem = '"face_box" must be [x0, y0, x1, y1] in pixels, with x0 < x1 and y0 < y1'
                yield SourceEntry("", "", where=where, problem=problem)
                continue
            yield SourceEntry(
                identity=str(record["identity"]),
                image=resolve(str(record["image"])),
                caption=str(record.get("caption") or ""),
                embedding=embedding,
                crop=resolve(crop) if crop else None,
                face_index=record.get("face_index"),
                face_box=[float(v) for v in face_box] if face_box is not None else None,
                where=where,
            )


def _is_box(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return False
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        return False
    return value[0] < value[2] and value[1] < value[3]


def iter_source(source: str | Path) -> Iterator[SourceEntry]:
    """The photos listed by a folder-per-identity tree or a ``.jsonl`` manifest."""
    source = Path(source)
    if source.is_dir():
        yield from _iter_folder(source)
    elif source.is_file() and source.suffix in (".jsonl", ".json"):
        yield from _iter_manifest(source)
    else:
        raise MissingInputError(
            f"{source} is neither a folder of identity folders nor a .jsonl manifest; see docs/training.md"
        )


@dataclass
class CacheEntry:
    """One usable photo in the cache."""

    index: int
    identity: str
    image: str
    caption: str
    crop: str
    width: int
    height: int
    # The target's face box as fractions of the photo's width and height (x0, y0, x1, y1); None: unknown
    # (a version-1 cache, or a precomputed embedding without a box). Read by ``train.face_loss_weight``.
    face_box: list[float] | None = None


@dataclass
class TrainCache:
    """The preprocessed training set: entries, their face embeddings and crops, and what was skipped."""

    root: Path
    entries: list[CacheEntry]
    face_embeds: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path) -> TrainCache:
        root = Path(root)
        meta_file = root / "cache.json"
        if not meta_file.is_file():
            raise MissingInputError(
                f"{root} is not a training cache (no cache.json): run `infinite-id train-prepare SOURCE --out {root}`"
            )
        info = json.loads(meta_file.read_text(encoding="utf-8"))
        if info.get("format") != CACHE_FORMAT:
            raise UserInputError(f"{meta_file} is not an Infinite-ID training cache")
        if int(info.get("version", 0)) > CACHE_VERSION:
            raise UserInputError(f"{root}: cache version {info['version']} is newer than this library; upgrade")
        entries = []
        with (root / "entries.jsonl").open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    entries.append(CacheEntry(**json.loads(line)))
        face_embeds = load_file(str(root / "embeddings.safetensors"))["face_embeds"]
        if face_embeds.shape[0] != len(entries):
            raise UserInputError(
                f"{root}: {len(entries)} entries but {face_embeds.shape[0]} embeddings (damaged cache)"
            )
        if not entries:
            raise UserInputError(f"{root} holds no usable photos; see {root / 'skipped.jsonl'}")
        return cls(root=root, entries=entries, face_embeds=face_embeds, info=info)

    @property
    def face_dim(self) -> int:
        return int(self.face_embeds.shape[1])

    @property
    def photos_with_face_box(self) -> int:
        """How many entries know their face box (what ``train.face_loss_weight`` needs)."""
        return sum(e.face_box is not None for e in self.entries)

    def crop_path(self, entry: CacheEntry) -> Path:
        return self.root / entry.crop


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class EpochSampler(torch.utils.data.Sampler):
    """A seeded shuffle per epoch that yields ``(epoch, index)`` keys.

    The epoch travels with every key, so the dataset's per-sample randomness (reference choice, condition
    dropout, flips) depends only on ``(seed, epoch, index)``: identical in every worker, process and resumed run.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(_stable_seed(self.seed, self.epoch) % (2**63))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        return iter([(self.epoch, i) for i in order])


def _resized_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(w, h) of a photo of ``size`` = (w, h) resized so its short side is ``resolution``."""
    w, h = size
    scale = resolution / min(w, h)
    return max(resolution, round(w * scale)), max(resolution, round(h * scale))


def _fit_square(image: Image.Image, resolution: int, center_crop: bool, rng: random.Random):
    """Resize the short side to ``resolution`` and crop a square; return the crop and its top-left corner."""
    nw, nh = _resized_size(image.size, resolution)
    image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    if center_crop:
        top, left = (nh - resolution) // 2, (nw - resolution) // 2
    else:
        top, left = rng.randint(0, nh - resolution), rng.randint(0, nw - resolution)
    return image.crop((left, top, left + resolution, top + resolution)), (top, left)


NO_BOX = (0.0, 0.0, 0.0, 0.0)


def box_in_crop(
    box: list[float] | None, size: tuple[int, int], resolution: int, top_left: tuple[int, int], flip: bool
) -> torch.Tensor:
    """A photo's face box (fractions of its ``size`` = (w, h)) in the square training crop, as fractions of the
    crop, clipped to it; ``NO_BOX`` (all zeros) when the box is unknown or cropped away."""
    if box is None:
        return torch.tensor(NO_BOX)
    nw, nh = _resized_size(size, resolution)
    top, left = top_left
    x0, y0, x1, y1 = box
    xs = [min(max((x * nw - left) / resolution, 0.0), 1.0) for x in (x0, x1)]
    ys = [min(max((y * nh - top) / resolution, 0.0), 1.0) for y in (y0, y1)]
    if flip:
        xs = [1.0 - xs[1], 1.0 - xs[0]]
    if xs[1] <= xs[0] or ys[1] <= ys[0]:
        return torch.tensor(NO_BOX)
    return torch.tensor([xs[0], ys[0], xs[1], ys[1]])


class PairTransform:
    """Turns one decoded (target photo, reference crop, face vector) into a training item.

    Shared by the indexed and the streaming datasets so both give identical items for the same inputs and draws.
    Draw order on ``rng`` (after the reference choice): ID dropout, text dropout, flip, crop offset.
    """

    def __init__(
        self,
        feature_extractor,
        mode: TrainingMode,
        resolution: int,
        face_dim: int,
        center_crop: bool = True,
        random_flip: bool = False,
        id_dropout: float = 0.0,
        text_dropout: float = 0.0,
    ) -> None:
        self.feature_extractor = feature_extractor
        self.mode = mode
        self.resolution = resolution
        self.face_dim = face_dim
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.id_dropout = id_dropout
        self.text_dropout = text_dropout if mode == "joint" else 0.0
        size = feature_extractor.crop_size
        self.clip_size = (size, size) if isinstance(size, int) else (int(size["height"]), int(size["width"]))

    def __call__(
        self,
        open_image: Callable[[], Image.Image],
        open_crop: Callable[[], Image.Image],
        face: Callable[[], torch.Tensor],
        caption: str,
        same_photo: bool,
        rng: random.Random,
        face_box: list[float] | None = None,
    ) -> dict[str, Any]:
        id_dropped = rng.random() < self.id_dropout
        text_dropped = rng.random() < self.text_dropout
        flip = self.random_flip and rng.random() < 0.5

        image = ImageOps.exif_transpose(open_image()).convert("RGB")
        original_size = (image.height, image.width)
        photo_size = image.size
        image, crop_top_left = _fit_square(image, self.resolution, self.center_crop, rng)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)

        if id_dropped:
            ref_pixels = torch.zeros(3, *self.clip_size)
            face_embed = torch.zeros(self.face_dim)
        else:
            ref_pixels = self.feature_extractor(images=open_crop().convert("RGB"), return_tensors="pt").pixel_values[0]
            face_embed = face().float()
        return {
            "pixel_values": pixels.contiguous(),
            "ref_pixel_values": ref_pixels,
            "face_embeds": face_embed,
            "caption": "" if text_dropped or self.mode != "joint" else caption,
            "original_size": torch.tensor(original_size),
            "crop_top_left": torch.tensor(crop_top_left),
            "id_dropped": torch.tensor(id_dropped),
            "same_photo": torch.tensor(same_photo),
            "face_box": box_in_crop(face_box, photo_size, self.resolution, crop_top_left, flip),
        }


def _read_image(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


class IdentityPairDataset(torch.utils.data.Dataset):
    """(reference, target) pairs from a :class:`TrainCache`; keys are ``(epoch, index)`` (see :class:`EpochSampler`).

    Item: ``pixel_values`` (target, ``[-1, 1]``), ``ref_pixel_values`` (the reference's aligned face crop through
    the CLIP image processor), ``face_embeds``, ``caption``, ``original_size``/``crop_top_left`` (SDXL time ids),
    ``id_dropped`` and ``same_photo`` flags. A dropped ID condition is the "no identity" input used at inference
    (zero face vector, all-zero CLIP pixels); a dropped caption is the empty prompt.
    """

    def __init__(
        self,
        cache: TrainCache,
        feature_extractor,
        mode: TrainingMode,
        resolution: int,
        seed: int,
        center_crop: bool = True,
        random_flip: bool = False,
        id_dropout: float = 0.0,
        text_dropout: float = 0.0,
    ) -> None:
        self.cache = cache
        self.mode = mode
        self.seed = seed
        self.transform = PairTransform(
            feature_extractor, mode, resolution, cache.face_dim, center_crop, random_flip, id_dropout, text_dropout
        )
        by_identity: dict[str, list[int]] = {}
        for i, entry in enumerate(cache.entries):
            by_identity.setdefault(entry.identity, []).append(i)
        self.by_identity = by_identity
        singles = [k for k, v in by_identity.items() if len(v) == 1]
        self.single_photo_identities = len(singles)
        if mode == "identity-enhanced" and singles:
            logger.warning(
                "%d of %d identities have a single photo: their %d samples use the same photo as reference and "
                "target (the paper pairs different photos of one person)",
                len(singles),
                len(by_identity),
                len(singles),
            )

    def __len__(self) -> int:
        return len(self.cache.entries)

    def stats(self) -> dict[str, int]:
        return {
            "photos": len(self.cache.entries),
            "identities": len(self.by_identity),
            "single_photo_identities": self.single_photo_identities,
            "photos_with_face_box": self.cache.photos_with_face_box,
        }

    def reference_index(self, index: int, rng: random.Random) -> int:
        if self.mode == "joint":
            return index
        candidates = self.by_identity[self.cache.entries[index].identity]
        if len(candidates) == 1:
            return index
        choice = rng.randrange(len(candidates) - 1)
        others = [c for c in candidates if c != index]
        return others[choice]

    def __getitem__(self, key) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = random.Random(_stable_seed(self.seed, epoch, index))
        entry = self.cache.entries[index]
        ref = self.reference_index(index, rng)
        return self.transform(
            lambda: _read_image(entry.image),
            lambda: _read_image(self.cache.crop_path(self.cache.entries[ref])),
            lambda: self.cache.face_embeds[ref],
            entry.caption,
            ref == index,
            rng,
            entry.face_box,
        )


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "caption"}
    out["caption"] = [it["caption"] for it in items]
    return out
