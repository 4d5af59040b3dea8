"""Streaming shards: the training cache as webdataset tar shards, and a pair dataset that streams them.

For sets too large to index on one file system, ``infinite-id train-shards CACHE OUT`` packs the prepared cache
into tar shards in the webdataset layout (the files of one sample share a key and sit next to each other)::

    OUT/shards.json              manifest: format, version, face encoder, sample and identity counts per shard
    OUT/shard-000000.tar         <key>.jpg|.png|.webp|.bmp   target photo, the original file's bytes
                                 <key>.crop.png              aligned face crop (the CLIP branch's input)
                                 <key>.emb.safetensors       face embedding: float32 tensor "face_embed", (dim,)
                                 <key>.json                  identity, caption, width, height, cache index

**Pairs inside a shard.** Shards are written grouped by identity: all photos of an identity are consecutive
in one shard (a shard closes at an identity boundary once it holds ``shard_size`` samples). A reader therefore
forms (reference, target) pairs from one identity's run at a time, holding only that run in memory, exactly as
the indexed dataset does: a different photo of the same identity (the paper), the same photo for an identity
with one photo (counted), the same photo always in ``joint`` mode.

**Epoch plan** (:meth:`StreamingPairDataset.plan`, the same on every process, from the manifest alone): the
shards in a seeded order per epoch, concatenated, are cut into one contiguous range per slot (process x
data-loader worker), sized so every process gets the same number of batches (DDP stays in lock-step). Each slot
reads its range, pairs, shuffles through a seeded buffer and yields; the last ``N mod (processes x batch)``
samples of an epoch's order are left out of that epoch. A damaged shard is reported and skipped; the slot reads
on past its range to fill its quota.

**Resume** restores the exact position: everything is a function of ``(seed, epoch, processes, workers,
batch size)``, so skipping the ``k`` batches already trained replays the slot streams without decoding images
(the tar bytes are still read) and the resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import MissingInputError, UserInputError
from ..outputs import atomic_file, atomic_write, check_output_dir, has_json_marker
from .data import CACHE_VERSION, PairTransform, TrainCache, _stable_seed, collate_pairs

logger = logging.getLogger(__name__)

SHARDS_FORMAT = "infinite-id-train-shards"
SHARDS_VERSION = 1
MANIFEST = "shards.json"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
_EXT_OF_SUFFIX = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}

__all__ = [
    "ShardIndex",
    "ShardReport",
    "StreamingLoader",
    "StreamingPairDataset",
    "read_shard",
    "write_shards",
]


def _webdataset():
    try:
        import webdataset
    except ImportError as exc:  # pragma: no cover - the train extra installs it
        raise ImportError("streaming shards need webdataset: pip install 'infinite-id[train]'") from exc
    return webdataset


def _embedding_bytes(vector: torch.Tensor) -> bytes:
    from safetensors.torch import save

    return save({"face_embed": vector.detach().to(torch.float32).contiguous()})


def _embedding_from_bytes(data: bytes) -> torch.Tensor:
    from safetensors.torch import load

    return load(data)["face_embed"]


# ---------------------------------------------------------------- writing


@dataclass
class ShardReport:
    out: Path
    shards: int = 0
    samples: int = 0
    identities: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.samples} photos of {self.identities} identities in {self.shards} shards in {self.out}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} (listed in {self.out / MANIFEST})"
        return text


def _shard_sample(cache: TrainCache, index: int) -> dict[str, Any]:
    """One cache entry as a webdataset sample; raises ``OSError``/``ValueError`` if its photo is unusable."""
    entry = cache.entries[index]
    ext = _EXT_OF_SUFFIX.get(Path(entry.image).suffix.lower())
    if ext is None:
        raise UserInputError(f"{entry.image}: not a .jpg/.png/.webp/.bmp photo")
    image_bytes = Path(entry.image).read_bytes()
    with Image.open(io.BytesIO(image_bytes)) as img:
        img.load()  # a photo changed since train-prepare must not reach a shard
    meta = {
        "identity": entry.identity,
        "caption": entry.caption,
        "width": entry.width,
        "height": entry.height,
        "index": entry.index,
        "image": entry.image,
        "face_box": entry.face_box,
    }
    return {
        "__key__": f"{entry.index:09d}",
        ext: image_bytes,
        "crop.png": cache.crop_path(entry).read_bytes(),
        "emb.safetensors": _embedding_bytes(cache.face_embeds[index]),
        "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
    }


def write_shards(
    cache: TrainCache | str | Path,
    out: str | Path,
    shard_size: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> ShardReport:
    """Pack a training cache into tar shards grouped by identity, plus the ``shards.json`` manifest.

    Identities are written in a seeded order (so a shard is not one slice of a sorted source). Every shard is
    written to a hidden ``.NAME.XXXXXXXX.tmp`` and renamed when complete (removed if the write fails); the
    manifest is written last, so a folder without it is an unfinished write. A photo that no longer reads is
    skipped and listed in the manifest.
    """
    wds = _webdataset()
    if shard_size < 1:
        raise UserInputError("shard_size must be >= 1")
    out = Path(out)
    root = cache.root if isinstance(cache, TrainCache) else Path(cache)
    is_own = has_json_marker(MANIFEST, "format", SHARDS_FORMAT)
    replacing = check_output_dir(
        out, what="OUT", command="infinite-id train-shards", is_own=is_own, inputs=[root], overwrite=overwrite
    )
    if not isinstance(cache, TrainCache):
        cache = TrainCache.load(cache)
    manifest_path = out / MANIFEST
    previous: set[str] = set()
    if replacing:  # only files the old manifest lists are ours to remove
        previous = {str(s.get("name")) for s in json.loads(manifest_path.read_text(encoding="utf-8"))["shards"]}
        manifest_path.unlink()  # the folder is an unfinished write until the new manifest lands
    out.mkdir(parents=True, exist_ok=True)

    by_identity: dict[str, list[int]] = {}
    for i, entry in enumerate(cache.entries):
        by_identity.setdefault(entry.identity, []).append(i)
    order = sorted(by_identity)
    random.Random(_stable_seed("shard-order", seed)).shuffle(order)

    report = ShardReport(out=out)
    shards: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cache.entries), desc="sharding", unit="photo")

    writer, count, idents, singles = None, 0, 0, 0
    pending = contextlib.ExitStack()  # the open shard's temporary file: renamed by close(), removed on an error

    def close() -> None:
        nonlocal writer, count, idents, singles
        name = f"shard-{len(shards):06d}.tar"
        pending.close()  # closes the writer, then renames its file into place
        shards.append(
            {
                "name": name,
                "samples": count,
                "identities": idents,
                "single_photo_identities": singles,
                "bytes": (out / name).stat().st_size,
            }
        )
        writer, count, idents, singles = None, 0, 0, 0

    with pending:
        for identity in order:
            samples = []
            for index in by_identity[identity]:
                try:
                    samples.append(_shard_sample(cache, index))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    entry = cache.entries[index]
                    report.skipped.append(
                        {"index": index, "identity": identity, "image": entry.image, "error": str(exc)}
                    )
                    logger.warning("skipping %s: %s", entry.image, exc)
                if bar is not None:
                    bar.update(1)
            if not samples:
                continue
            if writer is None:
                tmp = pending.enter_context(atomic_file(out / f"shard-{len(shards):06d}.tar"))
                writer = wds.TarWriter(str(tmp), encoder=False, mtime=0.0)
                pending.callback(writer.close)  # closed before the rename (or the removal)
            for sample in samples:
                writer.write(sample)
            count += len(samples)
            idents += 1
            singles += len(samples) == 1
            report.samples += len(samples)
            report.identities += 1
            if count >= shard_size:
                close()
        if writer is not None:
            close()
    if bar is not None:
        bar.close()
    if not shards:
        raise UserInputError(f"no photo of {cache.root} could be written; see the warnings")
    for name in previous - {s["name"] for s in shards}:  # left over from an earlier, larger write
        stale = out / name
        if stale.parent == out and stale.is_file():
            stale.unlink()
    report.shards = len(shards)
    manifest = {
        "format": SHARDS_FORMAT,
        "version": SHARDS_VERSION,
        "cache_version": int(cache.info.get("version", CACHE_VERSION)),
        "source_cache": str(cache.root),
        "face_encoder": cache.info["face_encoder"],
        "face_dim": cache.face_dim,
        "crop_size": cache.info.get("crop_size"),
        "grouped_by_identity": True,
        "samples": report.samples,
        "identities": report.identities,
        "single_photo_identities": sum(s["single_photo_identities"] for s in shards),
        "photos_with_face_box": cache.photos_with_face_box,
        "shard_size": shard_size,
        "seed": seed,
        "shards": shards,
        "skipped": report.skipped,
    }
    atomic_write(manifest_path, json.dumps(manifest, indent=2))
    logger.info(report.summary())
    return report


# ---------------------------------------------------------------- reading


@dataclass
class ShardIndex:
    """The ``shards.json`` manifest: where the shards are and how many samples each holds."""

    root: Path
    info: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> ShardIndex:
        path = Path(path)
        manifest = path if path.is_file() else path / MANIFEST
        if not manifest.is_file():
            raise MissingInputError(
                f"{path} holds no {MANIFEST} (not shards, or an unfinished write): "
                f"run `infinite-id train-shards CACHE {path}`"
            )
        info = json.loads(manifest.read_text(encoding="utf-8"))
        if info.get("format") != SHARDS_FORMAT:
            raise UserInputError(f"{manifest} is not an Infinite-ID shard manifest")
        if int(info.get("version", 0)) > SHARDS_VERSION:
            raise UserInputError(f"{manifest}: shard format version {info['version']} is newer than this library")
        if not info.get("shards") or not info.get("samples"):
            raise UserInputError(f"{manifest} lists no samples")
        return cls(root=manifest.parent, info=info)

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.info["shards"]

    @property
    def samples(self) -> int:
        return int(self.info["samples"])

    @property
    def face_dim(self) -> int:
        return int(self.info["face_dim"])

    def path(self, shard: dict[str, Any]) -> Path:
        return self.root / shard["name"]

    def check_files(self) -> list[str]:
        """Cheap start-up check (existence and size); returns one line per missing or resized shard."""
        problems = []
        for shard in self.shards:
            p = self.path(shard)
            if not p.is_file():
                problems.append(f"{p}: missing")
            elif "bytes" in shard and p.stat().st_size != shard["bytes"]:
                problems.append(f"{p}: {p.stat().st_size} bytes, the manifest says {shard['bytes']} (damaged?)")
        return problems


@dataclass
class ShardSample:
    key: str
    identity: str
    caption: str
    image: bytes
    crop: bytes
    embedding: bytes
    face_box: list[float] | None = None  # fractions of the photo (CacheEntry.face_box)


def _parse(sample: dict[str, Any]) -> ShardSample:
    meta = json.loads(sample["json"])
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    missing = [k for k, v in (("image", image), ("crop.png", sample.get("crop.png"))) if v is None]
    missing += [k for k in ("emb.safetensors",) if k not in sample]
    if missing:
        raise UserInputError(f"sample {sample['__key__']} lacks {', '.join(missing)}")
    return ShardSample(
        sample["__key__"],
        str(meta["identity"]),
        str(meta.get("caption") or ""),
        image,
        sample["crop.png"],
        sample["emb.safetensors"],
        meta.get("face_box"),
    )


def read_shard(path: str | Path) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard as webdataset dicts (``__key__`` plus one bytes value per extension)."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    with open(path, "rb") as f:
        files = ({**item, "__url__": str(path)} for item in tar_file_iterator(f))
        yield from group_by_keys(files)


@dataclass
class _Pair:
    target: ShardSample
    ref: ShardSample
    rng: random.Random


@dataclass
class SlotRange:
    """Slot ``(rank, worker)`` of an epoch: ``count`` targets from position ``start`` of the epoch's stream."""

    rank: int
    worker: int
    start: int
    count: int


class StreamingPairDataset(torch.utils.data.IterableDataset):
    """(reference, target) pairs streamed from tar shards; items as :class:`~.data.IdentityPairDataset`'s.

    One instance per process (``rank`` of ``world_size``); it splits its share among the DataLoader's
    ``num_workers`` itself. Call :meth:`set_position` before iterating (a new DataLoader iterator per epoch).
    """

    def __init__(
        self,
        index: ShardIndex,
        feature_extractor,
        mode,
        resolution: int,
        seed: int,
        batch_size: int,
        center_crop: bool = True,
        random_flip: bool = False,
        id_dropout: float = 0.0,
        text_dropout: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
    ) -> None:
        self.index = index
        self.mode = mode
        self.seed = seed
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.num_workers = max(1, num_workers)
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.transform = PairTransform(
            feature_extractor, mode, resolution, index.face_dim, center_crop, random_flip, id_dropout, text_dropout
        )
        self.batches_per_epoch = index.samples // (world_size * batch_size)
        self.epoch, self.skip_batches = 0, 0
        self.problems: list[str] = []  # damaged shards and samples met by this process (workers log theirs)
        singles = int(index.info.get("single_photo_identities", 0))
        if mode == "identity-enhanced" and singles:
            logger.warning(
                "%d of %d identities have a single photo: their samples use the same photo as reference and target "
                "(the paper pairs different photos of one person)",
                singles,
                index.info.get("identities", 0),
            )

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def stats(self) -> dict[str, int]:
        info = self.index.info
        return {
            "photos": int(info["samples"]),
            "identities": int(info["identities"]),
            "single_photo_identities": int(info["single_photo_identities"]),
            "photos_with_face_box": int(info.get("photos_with_face_box", 0)),
            "shards": len(self.index.shards),
        }

    def set_position(self, epoch: int, skip_batches: int = 0) -> None:
        """Iterate epoch ``epoch``, leaving out this process's first ``skip_batches`` batches (resume)."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.index.shards)))
        random.Random(_stable_seed(self.seed, epoch, "shards")).shuffle(order)
        return order

    def worker_batches(self, worker: int) -> int:
        per, extra = divmod(self.batches_per_epoch, self.num_workers)
        return per + (worker < extra)

    def plan(self, rank: int | None = None) -> list[SlotRange]:
        """This process's slots (or ``rank``'s): contiguous ranges of the epoch stream, in rank-major order."""
        rank = self.rank if rank is None else rank
        start = rank * self.batches_per_epoch * self.batch_size
        slots = []
        for w in range(self.num_workers):
            count = self.worker_batches(w) * self.batch_size
            slots.append(SlotRange(rank, w, start, count))
            start += count
        return slots

    def _note(self, message: str) -> None:
        self.problems.append(message)
        logger.warning(message)

    def _runs(self, shard: dict[str, Any]) -> Iterator[list[ShardSample]]:
        """One shard's identity runs; a damaged shard or sample is reported, what was read before it is kept."""
        path = self.index.path(shard)
        run: list[ShardSample] = []
        count = 0
        try:
            for raw in read_shard(path):
                count += 1
                try:
                    sample = _parse(raw)
                except (KeyError, ValueError, TypeError) as exc:
                    self._note(f"{path}: skipping a damaged sample: {exc}")
                    continue
                if run and sample.identity != run[0].identity:
                    yield run
                    run = []
                run.append(sample)
        except Exception as exc:  # tarfile.ReadError, truncation, OSError: the shard, not the run, is lost
            self._note(f"{path}: damaged shard skipped after the samples read so far ({type(exc).__name__}: {exc})")
            return  # its last run may be incomplete: dropped
        if count != shard["samples"]:
            self._note(f"{path}: holds {count} samples, the manifest lists {shard['samples']}")
        if run:
            yield run

    def _pairs(self, epoch: int, slot: SlotRange) -> Iterator[_Pair]:
        """The slot's targets, in stream order, paired within their identity run."""
        shards, order = self.index.shards, self.shard_order(epoch)
        ends = np.cumsum([shards[i]["samples"] for i in order])
        first = int(np.searchsorted(ends, slot.start, side="right"))
        offset = slot.start - (int(ends[first - 1]) if first else 0)
        emitted, empty_pass = 0, 0
        k = first
        while emitted < slot.count:
            shard = shards[order[k % len(order)]]
            position, got = 0, 0
            for run in self._runs(shard):
                for sample in run:
                    here = position
                    position += 1
                    if here < offset or emitted >= slot.count:
                        continue
                    rng = random.Random(_stable_seed(self.seed, epoch, sample.key))
                    ref = self._reference(sample, run, rng)
                    yield _Pair(sample, ref, rng)
                    emitted += 1
                    got += 1
                if emitted >= slot.count:
                    return
            offset = 0
            empty_pass = 0 if got else empty_pass + 1
            if empty_pass > len(order):
                raise RuntimeError(f"no readable sample in any shard of {self.index.root}")
            k += 1

    def _reference(self, target: ShardSample, run: list[ShardSample], rng: random.Random) -> ShardSample:
        if self.mode == "joint" or len(run) == 1:
            return target
        others = [s for s in run if s.key != target.key]
        return others[rng.randrange(len(others))]

    def _shuffled(self, pairs: Iterator[_Pair], rng: random.Random) -> Iterator[_Pair]:
        buffer: list[_Pair] = []
        for pair in pairs:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(pair)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], pair = pair, buffer[i]
            yield pair
        while buffer:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()

    def slot_stream(self, epoch: int, slot: SlotRange) -> Iterator[_Pair]:
        """The pairs slot ``slot`` yields in ``epoch``, shuffled, undecoded (for tests and tools)."""
        rng = random.Random(_stable_seed(self.seed, epoch, "buffer", slot.rank, slot.worker))
        return self._shuffled(self._pairs(epoch, slot), rng)

    def decode(self, pair: _Pair) -> dict[str, Any]:
        return self.transform(
            lambda: Image.open(io.BytesIO(pair.target.image)),
            lambda: Image.open(io.BytesIO(pair.ref.crop)),
            lambda: _embedding_from_bytes(pair.ref.embedding),
            pair.target.caption,
            pair.ref.key == pair.target.key,
            pair.rng,
            pair.target.face_box,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        if (info.num_workers if info is not None else 1) != self.num_workers:
            raise RuntimeError(f"built for {self.num_workers} loader workers, run with {info.num_workers}")
        # Batch j of an epoch comes from slot j % workers (the DataLoader's in-order round robin over workers).
        # After skipping k batches the DataLoader polls its worker 0 first, so worker i plays slot (i + k) % workers.
        k = self.skip_batches
        worker = ((info.id if info is not None else 0) + k) % self.num_workers
        slot = self.plan()[worker]
        skip = max(0, -(-(k - worker) // self.num_workers)) * self.batch_size
        for n, pair in enumerate(self.slot_stream(self.epoch, slot)):
            if n >= skip:
                yield self.decode(pair)


class StreamingLoader:
    """The trainer's loader for shards: ``len()`` batches per epoch on every process, and per-epoch iterators."""

    def __init__(self, dataset: StreamingPairDataset, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.num_workers = num_workers

    def __len__(self) -> int:
        return self.dataset.batches_per_epoch

    def epoch(self, epoch: int, skip: int = 0):
        """Batches of ``epoch`` for this process, from batch ``skip`` on."""
        self.dataset.set_position(epoch, skip)
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.dataset.batch_size,
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
        )
