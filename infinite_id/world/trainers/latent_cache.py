"""A latent cache of training renders: rendered and VAE-encoded once, reused by every epoch of the base UNet.

Rendering and encoding took 36-42% of every base-UNet step when they ran per step (docs/world.md). The cache holds
``photos_per_identity`` photos of each of ``num_identities`` training identities (photo ``k`` of identity ``i`` is
``sample_example(i, example_rng(seed, i, k))``, so a cache is a pure function of its config and the VAE):

- ``chunk_NNNNN.npz``: ``latents`` (n, C, h, w) float16, the VAE's posterior mean (the VAE's latents are already
  centred and unit-scaled), and ``face`` (n, h, w) uint8, the share of each latent cell covered by the face (0-255);
- ``chunk_NNNNN.jsonl``: one record per photo: identity, photo index, caption and the labels the probes read;
- ``cache.json``: the config and the VAE's digest, written last: a folder without it is unfinished.

Chunks are written atomically, so a build interrupted at any point resumes at the first missing chunk. A folder
whose ``cache.json`` (or partial chunks) was made with another config or VAE is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ...outputs import atomic_file, atomic_write
from ..models.attributes import images_to_tensor
from ..scene.dataset import example_rng, sample_example
from ..scene.factors import TRAIN_IDENTITIES

CACHE_NAME = "cache.json"
PARTIAL_NAME = "cache.partial.json"
_LABEL_KEYS = ("gender", "background", "clothing", "clothing_colour", "accessory", "style", "mentioned", "person")


@dataclass(frozen=True)
class LatentCacheConfig:
    num_identities: int = 30_000
    photos_per_identity: int = 4
    seed: int = 7
    chunk_size: int = 2048

    @property
    def size(self) -> int:
        return self.num_identities * self.photos_per_identity


def vae_digest(vae_dir: str | Path) -> str:
    """sha256 prefix of the VAE's weights and config: a cache is only valid for the VAE that made it."""
    digest = hashlib.sha256()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        digest.update((Path(vae_dir) / name).read_bytes())
    return digest.hexdigest()[:16]


def _chunk_paths(root: Path, index: int) -> tuple[Path, Path]:
    return root / f"chunk_{index:05d}.npz", root / f"chunk_{index:05d}.jsonl"


@torch.no_grad()
def _encode_chunk(vae: AutoencoderKL, examples, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    latents = []
    for start in range(0, len(examples), batch_size):
        pixels = images_to_tensor([e.image for e in examples[start : start + batch_size]])
        latents.append((vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor).numpy())
    latents = np.concatenate(latents).astype(np.float16)
    side = latents.shape[-1]
    masks = np.stack([e.layout.face_mask for e in examples]).astype(np.float32)
    factor = masks.shape[-1] // side
    cells = masks.reshape(len(examples), side, factor, side, factor).mean(axis=(2, 4))
    return latents, np.round(cells * 255).astype(np.uint8)


def build_latent_cache(
    out_dir: str | Path, vae_dir: str | Path, config: LatentCacheConfig | None = None, progress: bool = True
) -> Path:
    """Build (or finish) the cache of ``config`` with the VAE in ``vae_dir`` into ``out_dir``."""
    config = config or LatentCacheConfig()
    if config.num_identities > len(TRAIN_IDENTITIES) or min(config.num_identities, config.photos_per_identity) < 1:
        raise ValueError(f"a cache needs 1..{len(TRAIN_IDENTITIES)} identities and >= 1 photo each, got {config}")
    root = Path(out_dir)
    description = {"config": asdict(config), "vae": vae_digest(vae_dir)}
    for name in (CACHE_NAME, PARTIAL_NAME):
        existing = root / name
        if existing.is_file() and json.loads(existing.read_text()) != description:
            raise ValueError(f"{root} holds a latent cache of another config or VAE; choose another folder")
    if (root / CACHE_NAME).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / PARTIAL_NAME, json.dumps(description).encode())
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    photos = [(i, k) for i in range(config.num_identities) for k in range(config.photos_per_identity)]
    chunks = range(0, len(photos), config.chunk_size)
    for index, start in enumerate(tqdm(chunks, desc="latent cache", disable=not progress)):
        arrays, records = _chunk_paths(root, index)
        if arrays.is_file() and records.is_file():
            continue
        batch = photos[start : start + config.chunk_size]
        examples = [sample_example(i, example_rng(config.seed, i, k)) for i, k in batch]
        latents, face = _encode_chunk(vae, examples)
        lines = [
            json.dumps({"identity": i, "photo": k, "caption": e.caption, **{n: e.labels[n] for n in _LABEL_KEYS}})
            for (i, k), e in zip(batch, examples, strict=True)
        ]
        atomic_write(records, ("\n".join(lines) + "\n").encode())
        with atomic_file(arrays) as tmp, open(tmp, "wb") as f:
            np.savez(f, latents=latents, face=face)
    atomic_write(root / CACHE_NAME, json.dumps(description).encode())
    (root / PARTIAL_NAME).unlink()
    return root


@dataclass
class LatentCache:
    """A finished cache in memory: ``latents`` (N, C, h, w) float16, ``face`` (N, h, w) float in [0, 1], and the
    records (identity, photo, caption, labels) in the same order."""

    latents: torch.Tensor
    face: torch.Tensor
    records: list[dict]
    config: LatentCacheConfig

    def __len__(self) -> int:
        return len(self.records)


def load_latent_cache(root: str | Path) -> LatentCache:
    root = Path(root)
    if not (root / CACHE_NAME).is_file():
        raise FileNotFoundError(f"{root} is not a finished latent cache (no {CACHE_NAME}); build it first")
    description = json.loads((root / CACHE_NAME).read_text())
    config = LatentCacheConfig(**description["config"])
    latents, face, records = [], [], []
    count = -(-config.size // config.chunk_size)
    for index in range(count):
        arrays, lines = _chunk_paths(root, index)
        with np.load(arrays, allow_pickle=False) as data:
            latents.append(torch.from_numpy(data["latents"]))
            face.append(torch.from_numpy(data["face"]))
        records += [json.loads(line) for line in lines.read_text().splitlines() if line]
    latents_t, face_t = torch.cat(latents), torch.cat(face).float() / 255
    if len(records) != config.size or len(latents_t) != config.size or len(face_t) != config.size:
        raise ValueError(
            f"{root} is damaged: {len(records)} records, {len(latents_t)} latents, {config.size} expected"
        )
    return LatentCache(latents_t, face_t, records, config)
