"""Miniature-world examples and datasets on disk, in the layout the training code reads.

``build_dataset`` writes::

    OUT/<identity>/<k>.png      the render
    OUT/<identity>/<k>.txt      its caption (for the folder-per-identity source)
    OUT/manifest.jsonl          {"identity", "image", "caption", "labels"} per line, image paths relative to OUT

Every example is a pure function of ``(seed, identity id, photo index)``, so a dataset is reproducible byte for
byte, an interrupted build is simply run again (it re-renders the same files), and a subset of identities gives
the same photos as the full set.

    python -m infinite_id.world.scene.dataset --out data/world-train --identities 1000 --photos 8
    python -m infinite_id.world.scene.dataset --out data/world-eval --split eval --identities 100 --photos 4
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...outputs import atomic_file
from .captions import caption, sample_mentions, skin_tone
from .factors import EVAL_IDENTITIES, TRAIN_IDENTITIES, Nuisance, Semantics, identity_from_id, identity_split
from .render import Layout, render_with_layout

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class Example:
    """One rendered photo with its caption and everything known about it."""

    image: Image.Image
    caption: str
    labels: dict
    layout: Layout


def sample_example(
    identity_id: int,
    rng: np.random.Generator,
    size: int = 64,
    style_weights: dict[str, float] | None = None,
    semantics: Semantics | None = None,
    mention: Iterable[str] | None = None,
) -> Example:
    """Render a random photo of identity ``identity_id``: random semantics (unless given), nuisance and caption
    (naming the attributes in ``mention``, or a random choice of them).

    ``labels`` is JSON-serialisable: the identity id and split, the gender word, every semantic attribute, which
    of them the caption names (person traits included), the person's visible traits, the nuisance values, and
    the face box and five landmarks in pixels.
    """
    identity = identity_from_id(identity_id)
    if semantics is None:
        semantics = Semantics.sample(rng, style_weights)
    nuisance = Nuisance.sample(rng)
    mentions = sample_mentions(semantics, rng, identity) if mention is None else frozenset(mention)
    text = caption(semantics, identity.gender, rng, mentions, identity)
    image, layout = render_with_layout(identity, semantics, nuisance, size=size)
    labels = {
        "identity_id": int(identity_id),
        "split": identity_split(identity_id),
        "gender": identity.gender,
        **semantics.to_dict(),
        "mentioned": sorted(mentions),
        "person": {
            "hair_style": identity.hair_style,
            "hair_colour": identity.hair_colour,
            "facial_hair": identity.facial_hair,
            "skin_tone": skin_tone(identity),
        },
        "nuisance": nuisance.to_dict(),
        "face_box": [round(v, 3) for v in layout.face_box],
        "landmarks": [[round(x, 3), round(y, 3)] for x, y in layout.landmarks],
    }
    return Example(image=image, caption=text, labels=labels, layout=layout)


def example_rng(seed: int, identity_id: int, index: int) -> np.random.Generator:
    """The random stream of photo ``index`` of ``identity_id`` in a dataset built with ``seed``."""
    return np.random.default_rng([int(seed), int(identity_id), int(index)])


def identity_folder(identity_id: int) -> str:
    return f"{identity_id:010d}"


def build_dataset(
    out_dir: str | Path,
    identity_ids: Iterable[int],
    photos_per_identity: int,
    seed: int = 0,
    size: int = 64,
    style_weights: dict[str, float] | None = None,
    progress: bool = True,
) -> Path:
    """Render ``photos_per_identity`` photos of every identity into ``out_dir``; return the manifest path.

    The manifest is written to a temporary file and renamed at the end, so a manifest on disk is always
    complete. Existing files are overwritten with identical bytes.
    """
    if photos_per_identity < 1:
        raise ValueError(f"photos_per_identity must be >= 1, got {photos_per_identity}")
    ids = [int(i) for i in identity_ids]
    if not ids:
        raise ValueError("no identities to render")
    if len(set(ids)) != len(ids):
        raise ValueError("identity ids must be unique")
    for identity_id in ids:
        identity_split(identity_id)  # raises for ids outside both ranges
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(ids) * photos_per_identity
    with (
        atomic_file(out / MANIFEST_NAME) as tmp_manifest,
        tmp_manifest.open("w", encoding="utf-8") as manifest,
        tqdm(total=total, desc="rendering", unit="img", disable=not progress) as bar,
    ):
        for identity_id in ids:
            folder = identity_folder(identity_id)
            (out / folder).mkdir(exist_ok=True)
            for index in range(photos_per_identity):
                example = sample_example(identity_id, example_rng(seed, identity_id, index), size, style_weights)
                relative = f"{folder}/{index:03d}.png"
                example.image.save(out / relative)
                (out / relative).with_suffix(".txt").write_text(example.caption + "\n", encoding="utf-8")
                record = {"identity": folder, "image": relative, "caption": example.caption, "labels": example.labels}
                manifest.write(json.dumps(record) + "\n")
                bar.update(1)
    return out / MANIFEST_NAME


def read_manifest(path: str | Path) -> list[dict]:
    """The records of a miniature-world manifest."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render a miniature-world dataset in the training layout.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--identities", type=int, default=1000, help="how many identities")
    parser.add_argument("--photos", type=int, default=8, help="photos per identity")
    parser.add_argument("--split", choices=("train", "eval"), default="train", help="which identity range")
    parser.add_argument("--first", type=int, default=0, help="offset of the first identity within the range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--style", action="append", help="only this style (repeatable); default: the usual mix")
    args = parser.parse_args(argv)
    span = TRAIN_IDENTITIES if args.split == "train" else EVAL_IDENTITIES
    ids = range(span.start + args.first, span.start + args.first + args.identities)
    weights = {s: 1.0 for s in args.style} if args.style else None
    manifest = build_dataset(args.out, ids, args.photos, seed=args.seed, size=args.size, style_weights=weights)
    print(manifest)


if __name__ == "__main__":
    main()
