"""Train the miniature model's Infinite-ID adapters with the project's own training code (``infinite_id.training``).

    python -m infinite_id.world.trainers.train_adapters --weights W --out W/adapter_joint --mode joint

Three steps, each skipped when its output exists (so an interrupted stage continues where it stopped):

1. ``data/``: render ``photos_per_identity`` photos of each of ``num_identities`` training identities (random
   semantics, nuisances, styles and captions, :func:`~infinite_id.world.scene.dataset.build_dataset`) and write a
   JSONL manifest with, per photo, the precomputed embedding of the mini face encoder (``face_encoder`` stage,
   on the crop that the renderer's true landmarks give) and the aligned CLIP crop (the world template, as the
   ``mini`` face backend makes it at inference).
2. ``cache/``: :func:`infinite_id.training.preprocess.prepare_cache` on that manifest, recording the ``mini``
   backend's encoder description, which the adapter then carries.
3. ``run/``: :func:`infinite_id.training.trainer.train` on the ``base`` stage's pipeline at 64 px, in
   ``identity-enhanced`` mode (text cross-attention off, reference and target different photos of one person: the
   paper) or ``joint`` (IP-Adapter-style, with captions), with the base's mini CLIP image encoder as CLIP branch.

The stage folder then gets ``adapter.safetensors`` (the pipeline's adapter format) and ``metrics.json``: the
training loss, steps and speed, and a held-out check that the adapter reads the identity (:func:`evaluate_adapter`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...outputs import atomic_file, atomic_write
from ..models.face_model import MiniFaceEncoder, align_world_face, crops_to_tensor
from ..scene.dataset import build_dataset, read_manifest
from ..scene.factors import EVAL_IDENTITIES, TRAIN_IDENTITIES
from .train_utils import stage_folder, training_command, write_stage_metrics

ADAPTER_NAME = "adapter.safetensors"
MODES = ("identity-enhanced", "joint")


@dataclass
class AdapterTrainingConfig:
    mode: str = "identity-enhanced"
    num_identities: int = 1000  # training identities 0 .. num_identities - 1
    photos_per_identity: int = 8
    steps: int = 700
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 40
    id_dropout: float = 0.05
    text_dropout: float = 0.05
    clip_mapper: str = "linear"
    face_num_tokens: int = 4
    face_loss_weight: float = 0.0  # train.face_loss_weight: extra loss weight on the face box (0: the paper)
    crop_size: int = 64  # side of the stored CLIP crops (the mini CLIP reads 64 px)
    seed: int = 0
    checkpoint_every: int = 250
    loss_window: int = 50  # the final loss is the mean over this many last steps
    eval_identities: int = 64  # held-out identities of the evaluation (reference and target photo each)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.photos_per_identity < 2 and self.mode == "identity-enhanced":
            raise ValueError("identity-enhanced training needs at least two photos per identity")
        if not 0 < self.num_identities <= len(TRAIN_IDENTITIES):
            raise ValueError(f"num_identities must be in 1..{len(TRAIN_IDENTITIES)}")


def build_training_source(
    data_dir: str | Path, face_encoder_dir: str | Path, config: AdapterTrainingConfig, progress: bool = True
) -> Path:
    """Render the photos and write ``data_dir/train.jsonl`` with precomputed embeddings and CLIP crops."""
    data = Path(data_dir)
    manifest = data / "train.jsonl"
    if manifest.is_file():
        return manifest
    photos = data / "photos"
    records = read_manifest(
        build_dataset(
            photos, range(config.num_identities), config.photos_per_identity, seed=config.seed, progress=progress
        )
    )
    encoder = MiniFaceEncoder.from_pretrained(face_encoder_dir).eval()
    (data / "embeddings").mkdir(parents=True, exist_ok=True)
    (data / "crops").mkdir(parents=True, exist_ok=True)
    with atomic_file(manifest) as tmp, tmp.open("w", encoding="utf-8") as out, torch.no_grad():
        for start in range(0, len(records), 256):
            chunk = records[start : start + 256]
            images = [Image.open(photos / r["image"]).convert("RGB") for r in chunk]
            landmarks = [np.asarray(r["labels"]["landmarks"]) for r in chunk]
            face_crops = [
                align_world_face(im, lm, encoder.config.input_size) for im, lm in zip(images, landmarks, strict=True)
            ]
            embeddings = encoder(crops_to_tensor(face_crops)).numpy().astype(np.float32)
            for k, (record, image, points) in enumerate(zip(chunk, images, landmarks, strict=True)):
                name = f"{start + k:08d}"
                np.save(data / "embeddings" / f"{name}.npy", embeddings[k])
                align_world_face(image, points, config.crop_size).save(data / "crops" / f"{name}.png")
                line = {
                    "identity": record["identity"],
                    "image": f"photos/{record['image']}",
                    "caption": record["caption"],
                    "embedding": f"embeddings/{name}.npy",
                    "crop": f"crops/{name}.png",
                    "face_box": record["labels"]["face_box"],  # the renderer's own, in pixels
                }
                out.write(json.dumps(line) + "\n")
    return manifest


def training_config(base_dir: Path, cache_dir: Path, run_dir: Path, config: AdapterTrainingConfig, progress: bool):
    """The :class:`~infinite_id.training.config.TrainConfig` of one adapter stage."""
    from ...training.config import (
        AdapterSection,
        DataSection,
        ModelSection,
        OutputSection,
        TrainConfig,
        TrainSection,
        ValidationSection,
    )

    return TrainConfig(
        model=ModelSection(pretrained=str(base_dir)),
        adapter=AdapterSection(clip_mapper=config.clip_mapper, face_num_tokens=config.face_num_tokens),
        data=DataSection(cache=str(cache_dir), resolution=64, center_crop=True, random_flip=False, num_workers=0),
        train=TrainSection(
            mode=config.mode,
            seed=config.seed,
            max_steps=config.steps,
            batch_size=config.batch_size,
            learning_rate=config.lr,
            lr_scheduler="cosine",
            lr_warmup_steps=min(config.warmup_steps, config.steps // 10),
            id_dropout=config.id_dropout,
            text_dropout=config.text_dropout,
            face_loss_weight=config.face_loss_weight,
        ),
        output=OutputSection(
            dir=str(run_dir),
            checkpoint_every=config.checkpoint_every,
            keep_checkpoints=1,
            log_every=50,
            resume="auto",
            progress_bar=progress,
            tensorboard=False,
        ),
        validation=ValidationSection(every=0),
    )


@torch.no_grad()
def evaluate_adapter(
    base_dir: str | Path,
    adapter_path: str | Path,
    face_encoder_dir: str | Path,
    mode: str,
    num_identities: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Denoising loss on held-out identities, the reference being another photo of the target's person, with
    the right identity, with another person's (the references rolled by one) and with the "no identity" input.

    With the conditioning of the training mode (identity-enhanced: empty prompt, text cross-attention off;
    joint: the caption). Fixed noise, timesteps 250, 500 and 750. ``identity_gain`` (other person minus right
    person) is positive when the adapter uses the identity.
    """
    from ...attention_processors import InfiniteIDAttentionState
    from ...pipelines import InfiniteIDStableDiffusionPipeline
    from ..models.attributes import images_to_tensor
    from ..scene.dataset import sample_example

    if num_identities < 2:
        raise ValueError("the evaluation needs at least two identities")
    pipe = InfiniteIDStableDiffusionPipeline.from_pretrained(base_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_adapter(adapter_path)
    encoder = MiniFaceEncoder.from_pretrained(face_encoder_dir).eval()
    pairs = [
        [sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 61, i, k])) for k in range(2)]
        for i in range(num_identities)
    ]
    references, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    side = encoder.config.input_size
    faces = encoder(crops_to_tensor([align_world_face(r.image, r.layout.landmarks, side) for r in references]))
    crops = [align_world_face(r.image, r.layout.landmarks, 64) for r in references]
    identity = pipe.identity_encoder
    tokens = identity.tokens(identity.features(crops, faces))
    inputs = {
        "right person": tokens,
        "other person": tokens.roll(1, dims=0),
        "no identity": identity.tokens(identity.unconditional_features(num_identities)),
    }
    prompts = [t.caption for t in targets] if mode == "joint" else [""] * num_identities
    text = pipe.encode_prompt(prompts, torch.device("cpu"), 1, False)[0]
    vae = pipe.vae
    latents = vae.encode(images_to_tensor([t.image for t in targets])).latent_dist.mode() * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
    losses: dict[str, list[float]] = {name: [] for name in inputs}
    for t in (250, 500, 750):
        timesteps = torch.full((num_identities,), t)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        for name, id_tokens in inputs.items():
            state = InfiniteIDAttentionState(id_tokens=id_tokens, text_cross_attention=mode == "joint")
            pred = pipe.unet(noisy, timesteps, text, cross_attention_kwargs={"infinite_id": state}).sample
            losses[name].append(float(torch.nn.functional.mse_loss(pred, noise)))
    result = {f"eval_loss_{name.replace(' ', '_')}": float(np.mean(v)) for name, v in losses.items()}
    result["identity_gain"] = result["eval_loss_other_person"] - result["eval_loss_right_person"]
    result["eval_identities"] = num_identities
    return result


def train_adapter(
    out_dir: str | Path,
    weights_dir: str | Path,
    config: AdapterTrainingConfig | None = None,
    progress: bool = True,
) -> dict:
    """Train one adapter into ``out_dir`` on the ``base`` and ``face_encoder`` stages of ``weights_dir``."""
    from ...training.preprocess import prepare_cache
    from ...training.trainer import train
    from ..face_backend import mini_encoder_info
    from ..models.weights import resolve_weights_dir

    config = config or AdapterTrainingConfig()
    root = resolve_weights_dir(weights_dir, stages=("base", "face_encoder"))
    out = stage_folder(out_dir, config.seed)
    info = mini_encoder_info(root, "face_encoder")
    manifest = build_training_source(out / "data", root / "face_encoder", config, progress=progress)
    cache = out / "cache"
    if not (cache / "cache.json").is_file():
        report = prepare_cache(manifest, cache, face_encoder=info, crop_size=config.crop_size)
        if report.skipped:
            raise RuntimeError(f"{len(report.skipped)} rendered photos were refused: see {cache}/skipped.jsonl")
    result = train(training_config(root / "base", cache, out / "run", config, progress))
    atomic_write(out / ADAPTER_NAME, Path(result.adapter_path).read_bytes())
    window = result.losses[-config.loss_window :]
    metrics = {
        "final_loss": float(np.mean(window)) if window else float("nan"),
        "first_loss": float(np.mean(result.losses[: config.loss_window])) if result.losses else float("nan"),
        "steps": result.global_step,
        "samples_per_second": round(result.samples_per_second, 2),
        "photos": result.dataset.get("photos"),
        "identities": result.dataset.get("identities"),
        "face_encoder": info.to_dict(),
        "resumed": result.resumed_from is not None,
    }
    metrics.update(
        evaluate_adapter(
            root / "base", out / ADAPTER_NAME, root / "face_encoder", config.mode, config.eval_identities, config.seed
        )
    )
    return write_stage_metrics(out, metrics, config)


def main(argv: list[str] | None = None) -> None:
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", choices=MODES, default="identity-enhanced")
    known, rest = pre.parse_known_args(argv)

    def train_mode(args: argparse.Namespace, config: AdapterTrainingConfig) -> dict:
        config.mode = known.mode
        return train_adapter(args.out, args.weights, config)

    training_command(
        train_mode,
        AdapterTrainingConfig,
        "Train a miniature-world Infinite-ID adapter with infinite_id.training.",
        rest,
        out_help="stage folder (adapter.safetensors, metrics.json)",
        paths=(("weights", "retrain output holding the base and face_encoder stages"),),
    )


if __name__ == "__main__":
    main()
