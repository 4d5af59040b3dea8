"""Train the miniature world's face detector (five landmarks + face presence) on renders.

    python -m infinite_id.world.trainers.train_landmarks --out infinite_id/world/weights/landmarks --steps 1500

A quarter of a batch are negatives (``face_free_image``): mostly face-free scenes of the world in a random style,
and some plain images (a flat colour, a gradient, smooth noise) so that a blank or foreign picture is not taken
for a face; the face/no-face term is weighted up so that it is learned alongside the landmarks. Batches are a pure
function of ``(seed, step)`` (resumable). Evaluation on held-out identities: mean landmark error in pixels and
normalised by the inter-ocular distance, and face/no-face accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.attributes import images_to_tensor
from ..models.landmarks import LandmarkDetector, LandmarkDetectorConfig
from ..models.small_cnn import config_to_dict
from ..scene.backgrounds import draw_background
from ..scene.dataset import sample_example
from ..scene.factors import BACKGROUNDS, EVAL_IDENTITIES, STYLES, TRAIN_IDENTITIES, Nuisance
from ..scene.styles import apply_lighting, apply_style
from .train_utils import stage_folder, train_evaluate_save, training_command


@dataclass
class LandmarkTrainingConfig:
    num_identities: int = 100_000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    negative_fraction: float = 0.25
    plain_fraction: float = 0.3  # share of the negatives that are plain images rather than face-free scenes
    presence_weight: float = 5.0  # weight of the face/no-face loss against the landmark loss
    seed: int = 0
    eval_images: int = 400
    checkpoint_every: int = 250
    detector: LandmarkDetectorConfig = LandmarkDetectorConfig()


def face_free_scene(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A background alone, lit and styled like a photo of the world: a negative for the detector."""
    name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    style = STYLES[int(rng.integers(len(STYLES)))]
    nuisance = Nuisance.sample(rng)
    pixels = np.asarray(draw_background(name, size, rng), dtype=np.float32) / 255.0
    zeros = np.zeros(pixels.shape[:2], np.float32)
    pixels = apply_lighting(pixels, zeros, np.array([size / 2, size / 2]), size / 4, nuisance)
    return apply_style(pixels, style, rng)


def plain_image(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A picture with nothing in it: a flat colour, a linear gradient or smooth colour noise."""
    kind = int(rng.integers(3))
    if kind == 0:
        pixels = np.broadcast_to(rng.uniform(size=3), (size, size, 3))
    elif kind == 1:
        ramp = np.linspace(0.0, 1.0, size)[:, None] * np.cos(rng.uniform(0, np.pi)) + np.linspace(0.0, 1.0, size)[
            None, :
        ] * np.sin(rng.uniform(0, np.pi))
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
        low, high = rng.uniform(size=3), rng.uniform(size=3)
        pixels = low + ramp[..., None] * (high - low)
    else:
        coarse = rng.uniform(size=(4, 4, 3))
        pixels = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def face_free_image(rng: np.random.Generator, plain_fraction: float, size: int = 64) -> Image.Image:
    """A negative for the detector: a plain image with probability ``plain_fraction``, else a face-free scene."""
    return plain_image(rng, size) if rng.uniform() < plain_fraction else face_free_scene(rng, size)


def _fractions(landmarks, size: int) -> np.ndarray:
    return (np.asarray(landmarks, dtype=np.float32) + 0.5) / size


def training_batch(config: LandmarkTrainingConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, target landmarks (B, 5, 2) as fractions of the side, and face labels (1 = face)."""
    rng = np.random.default_rng([config.seed, 31, step])
    ids = rng.integers(0, min(config.num_identities, len(TRAIN_IDENTITIES)), config.batch_size).tolist()
    negative = rng.uniform(size=config.batch_size) < config.negative_fraction
    images, targets = [], np.zeros((config.batch_size, 5, 2), np.float32)
    for j, identity_id in enumerate(ids):
        photo_rng = np.random.default_rng([config.seed, 32, step, j])
        if negative[j]:
            images.append(face_free_image(photo_rng, config.plain_fraction))
        else:
            example = sample_example(identity_id, photo_rng)
            images.append(example.image)
            targets[j] = _fractions(example.layout.landmarks, example.image.size[0])
    return images_to_tensor(images), torch.from_numpy(targets), torch.from_numpy((~negative).astype(np.float32))


def landmark_loss(model: LandmarkDetector, pixels, targets, is_face, presence_weight: float = 1.0) -> torch.Tensor:
    points, logits = model(pixels)
    per_face = F.smooth_l1_loss(points, targets, reduction="none", beta=0.02).mean(dim=(1, 2))
    location = (per_face * is_face).sum() / is_face.sum().clamp_min(1.0)
    return 50.0 * location + presence_weight * F.binary_cross_entropy_with_logits(logits, is_face)


@torch.no_grad()
def evaluate_landmarks(model: LandmarkDetector, num_images: int = 400, seed: int = 0) -> dict[str, float]:
    examples = [
        sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 33, i])) for i in range(num_images)
    ]
    negatives = [face_free_scene(np.random.default_rng([seed, 34, i])) for i in range(num_images // 4)]
    plain = [plain_image(np.random.default_rng([seed, 35, i])) for i in range(num_images // 8)]
    found = model.detect([e.image for e in examples])
    truth = np.stack([np.asarray(e.layout.landmarks) for e in examples])
    predicted = np.stack([f.landmarks for f in found])
    error = np.linalg.norm(predicted - truth, axis=2).mean(axis=1)
    inter_ocular = np.linalg.norm(truth[:, 0] - truth[:, 1], axis=1)
    empty = model.detect(negatives)
    return {
        "mean_error_px": float(error.mean()),
        "normalised_mean_error": float((error / inter_ocular).mean()),
        "face_recall": float(np.mean([f.face_probability > 0.5 for f in found])),
        "no_face_accuracy": float(np.mean([f.face_probability <= 0.5 for f in empty])),
        "plain_no_face_accuracy": float(np.mean([f.face_probability <= 0.5 for f in model.detect(plain)])),
        "eval_images": num_images,
    }


def train_landmark_detector(
    out_dir: str | Path, config: LandmarkTrainingConfig | None = None, progress: bool = True
) -> dict[str, float]:
    """Train (or resume) the detector into ``out_dir``; return and save held-out metrics."""
    config = config or LandmarkTrainingConfig()
    out = stage_folder(out_dir, config.seed)
    model = LandmarkDetector(config.detector)
    return train_evaluate_save(
        out,
        config,
        {"model": model},
        lambda step: landmark_loss(model, *training_batch(config, step), presence_weight=config.presence_weight),
        evaluate=lambda: evaluate_landmarks(model, config.eval_images, seed=config.seed),
        save=model.save_pretrained,
        nested={"detector": config_to_dict(config.detector)},
        progress=progress,
        weight_decay=config.weight_decay,
        max_grad_norm=5.0,
        desc="face detector",
    )


def main(argv: list[str] | None = None) -> None:
    training_command(
        lambda args, config: train_landmark_detector(args.out, config),
        LandmarkTrainingConfig,
        "Train the miniature world's face detector (landmarks).",
        argv,
    )


if __name__ == "__main__":
    main()
