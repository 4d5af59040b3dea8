"""Train the miniature world's attribute classifier on freshly rendered photos of training identities.

    python -m infinite_id.world.trainers.train_attributes --out infinite_id/world/weights/attributes --steps 1500

Batches are a pure function of ``(seed, step)`` (resumable). Evaluation: per-attribute accuracy on photos of
held-out identities, and the exact attribute accuracy against their captions (what the metric will measure
on generated images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.attributes import ATTRIBUTE_VALUES, AttributeClassifier, AttributeClassifierConfig, images_to_tensor
from ..models.attributes import attribute_accuracy as caption_accuracy
from ..models.small_cnn import config_to_dict
from ..scene.captions import parse_prompt
from ..scene.dataset import sample_example
from ..scene.factors import EVAL_IDENTITIES, TRAIN_IDENTITIES
from .train_utils import stage_folder, train_evaluate_save, training_command


@dataclass
class AttributeTrainingConfig:
    num_identities: int = 100_000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    eval_images: int = 600
    checkpoint_every: int = 250
    classifier: AttributeClassifierConfig = AttributeClassifierConfig()


def training_batch(config: AttributeTrainingConfig, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rng = np.random.default_rng([config.seed, 21, step])
    ids = rng.integers(0, min(config.num_identities, len(TRAIN_IDENTITIES)), config.batch_size).tolist()
    examples = [sample_example(i, np.random.default_rng([config.seed, 22, step, j])) for j, i in enumerate(ids)]
    labels = {
        name: torch.tensor([values.index(e.labels[name]) for e in examples])
        for name, values in ATTRIBUTE_VALUES.items()
    }
    return images_to_tensor([e.image for e in examples]), labels


@torch.no_grad()
def evaluate_attributes(model: AttributeClassifier, num_images: int = 600, seed: int = 0) -> dict[str, float]:
    examples = [
        sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 23, i])) for i in range(num_images)
    ]
    predictions = []
    for start in range(0, num_images, 200):
        predictions += model.predict([e.image for e in examples[start : start + 200]])
    metrics = {
        f"accuracy_{name}": float(
            np.mean([p[name] == e.labels[name] for p, e in zip(predictions, examples, strict=True)])
        )
        for name in ATTRIBUTE_VALUES
    }
    scores = [caption_accuracy(p, parse_prompt(e.caption).named()) for p, e in zip(predictions, examples, strict=True)]
    metrics["caption_attribute_accuracy"] = float(np.mean([s for s in scores if s is not None]))
    metrics["eval_images"] = num_images
    return metrics


def train_attribute_classifier(
    out_dir: str | Path, config: AttributeTrainingConfig | None = None, progress: bool = True
) -> dict[str, float]:
    """Train (or resume) the attribute classifier into ``out_dir``; return and save held-out metrics."""
    config = config or AttributeTrainingConfig()
    out = stage_folder(out_dir, config.seed)
    model = AttributeClassifier(config.classifier)

    def step_loss(step: int) -> torch.Tensor:
        pixels, labels = training_batch(config, step)
        logits = model(pixels)
        return sum(F.cross_entropy(logits[name], labels[name]) for name in ATTRIBUTE_VALUES)

    return train_evaluate_save(
        out,
        config,
        {"model": model},
        step_loss,
        evaluate=lambda: evaluate_attributes(model, config.eval_images, seed=config.seed),
        save=model.save_pretrained,
        nested={"classifier": config_to_dict(config.classifier)},
        progress=progress,
        weight_decay=config.weight_decay,
        max_grad_norm=5.0,
        desc="attribute classifier",
    )


def main(argv: list[str] | None = None) -> None:
    training_command(
        lambda args, config: train_attribute_classifier(args.out, config),
        AttributeTrainingConfig,
        "Train the miniature world's attribute classifier.",
        argv,
    )


if __name__ == "__main__":
    main()
