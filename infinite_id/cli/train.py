"""``infinite-id train-prepare`` (cache face embeddings and crops), ``infinite-id train-shards`` (pack the cache
into webdataset tar shards for streaming) and ``infinite-id train`` (train an adapter)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from . import app


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train_command(
    ctx: typer.Context,
    config: Path = typer.Argument(
        ..., help="Training config (.yaml or .toml); see configs/sd15.yaml, configs/sdxl.yaml."
    ),
) -> None:
    """Train an Infinite-ID adapter. Override any config key with --section.key=value (e.g. --train.max_steps=100).

    Multi-GPU / multi-node: accelerate launch ACCELERATE_OPTIONS -m infinite_id.train CONFIG (docs/training.md).
    """
    from ..training import load_config, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(config, ctx.args)
    result = train(cfg)
    if result.adapter_path is not None:
        typer.echo(f"adapter: {result.adapter_path}")


@app.command("train-prepare")
def train_prepare_command(
    source: Path = typer.Argument(..., help="A folder per identity, or a .jsonl manifest (docs/training.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder to write."),
    backend: str = typer.Option(
        "auto", help="Face backend for photos without a precomputed embedding: auto, insightface, dlib, or none."
    ),
    model: str = typer.Option(None, help="Face model of the backend (e.g. buffalo_s)."),
    precomputed_encoder: str = typer.Option(
        None,
        help="BACKEND/MODEL that produced the precomputed embeddings in the source (required with --backend none).",
    ),
    crop_size: int = typer.Option(224, help="Side of the stored aligned face crops."),
    overwrite: bool = typer.Option(False, help="Replace an existing cache."),
) -> None:
    """Run the face models once: cache every photo's face embedding and aligned crop; skip and report bad entries."""
    from ..outputs import check_output_dir
    from ..training.preprocess import MAX_CROP_SIZE, MIN_CROP_SIZE, is_cache_dir, prepare_cache, source_paths

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # Arguments and the output folder first: nothing is loaded for a run that would be refused.
    if not MIN_CROP_SIZE <= crop_size <= MAX_CROP_SIZE:
        raise typer.BadParameter(f"use {MIN_CROP_SIZE} to {MAX_CROP_SIZE} pixels", param_hint="--crop-size")
    from ..faces.factory import face_backend_names

    backends = face_backend_names()
    if backend not in ("auto", "none", *backends):
        raise typer.BadParameter(f"{backend!r}: choose auto, none, {', '.join(backends)}", param_hint="--backend")
    if backend == "none" and not precomputed_encoder:
        raise typer.BadParameter("--backend none needs --precomputed-encoder BACKEND/MODEL")
    if precomputed_encoder and "/" not in precomputed_encoder:
        raise typer.BadParameter("use BACKEND/MODEL, e.g. world/renderer", param_hint="--precomputed-encoder")
    inputs = source_paths(source)
    check_output_dir(out, what="--out", command="infinite-id train-prepare", is_own=is_cache_dir, inputs=inputs,
                     overwrite=overwrite)  # fmt: skip
    face_encoder = None
    if precomputed_encoder:
        from ..faces.base import FaceEncoderInfo

        name, model_name = precomputed_encoder.split("/", 1)
        dim = _first_embedding_dim(source)
        if dim is None:
            raise typer.BadParameter(f"{source} lists no precomputed embedding", param_hint="--precomputed-encoder")
        face_encoder = FaceEncoderInfo(name, model_name, dim)
    analyzer = None
    if backend != "none":
        from ..faces import get_face_analyzer

        analyzer = get_face_analyzer(backend, **({"model": model} if model else {}))
    report = prepare_cache(
        source, out, analyzer=analyzer, face_encoder=face_encoder, crop_size=crop_size, overwrite=overwrite,
        progress=True,
    )  # fmt: skip
    typer.echo(report.summary())


@app.command("train-shards")
def train_shards_command(
    cache: Path = typer.Argument(..., help="A cache written by `infinite-id train-prepare`."),
    out: Path = typer.Argument(..., help="Folder for the tar shards and their shards.json manifest."),
    shard_size: int = typer.Option(1000, help="Photos per shard (a shard closes at an identity boundary)."),
    seed: int = typer.Option(0, help="Seed of the identity order across shards."),
    overwrite: bool = typer.Option(False, help="Replace existing shards in OUT."),
) -> None:
    """Pack a training cache into webdataset tar shards grouped by identity, to train with --data.shards=OUT."""
    from ..training.shards import write_shards

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if shard_size < 1:
        raise typer.BadParameter("use 1 or more photos per shard", param_hint="--shard-size")
    report = write_shards(cache, out, shard_size=shard_size, seed=seed, overwrite=overwrite, progress=True)
    typer.echo(report.summary())


def _first_embedding_dim(source: Path) -> int | None:
    import numpy as np

    from ..training.data import iter_source
    from ..training.preprocess import _check_embedding

    for entry in iter_source(source):
        if entry.embedding is not None and not entry.problem:
            try:
                return int(np.asarray(_check_embedding(entry.embedding, entry.where)).shape[0])
            except (OSError, ValueError):  # that entry is skipped (and reported) by prepare_cache itself
                continue
    return None
