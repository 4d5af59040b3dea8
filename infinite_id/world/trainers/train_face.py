"""Train the mini face encoder of the miniature world: additive angular margin (ArcFace) over training identities.

Batches are rendered on the fly: every step draws fresh photos (new pose, expression, light, scene, clothing,
accessory and style) of random training identities, so the encoder must learn what stays fixed, the identity.
A batch is a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.

Evaluation uses held-out identities (disjoint id range): rank-1 identification with one gallery photo per
identity, and the mean cosine of same-identity and different-identity pairs.

    python -m infinite_id.world.trainers.train_face --out infinite_id/world/weights/face_encoder --steps 3000
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.face_model import FaceEncoderConfig, MiniFaceEncoder, align_world_face, crops_to_tensor
from ..models.small_cnn import config_to_dict
from ..scene.dataset import sample_example
from ..scene.factors import EVAL_IDENTITIES, TRAIN_IDENTITIES
from .train_utils import stage_folder, train_evaluate_save, training_command


@dataclass
class FaceTrainingConfig:
    num_identities: int = 2000  # training identities: ids 0 .. num_identities - 1
    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    margin: float = 0.3  # additive angular margin, radians
    scale: float = 30.0
    seed: int = 0
    eval_identities: int = 200
    eval_photos: int = 4
    checkpoint_every: int = 250
    encoder: FaceEncoderConfig = FaceEncoderConfig()


class ArcMarginHead(nn.Module):
    """Class centres on the unit sphere; logits s*cos(theta + m) for the true class, s*cos(theta) otherwise."""

    def __init__(self, embedding_dim: int, num_classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1)).clamp(-1 + 1e-6, 1 - 1e-6)
        target = cosine.gather(1, labels[:, None])
        sine = torch.sqrt(1.0 - target**2)
        with_margin = target * math.cos(self.margin) - sine * math.sin(self.margin)
        # Past theta = pi - m, cos(theta + m) would increase again; fall back to a linear penalty there.
        with_margin = torch.where(target > math.cos(math.pi - self.margin), with_margin, target - self.margin * 0.5)
        logits = cosine.scatter(1, labels[:, None], with_margin)
        return F.cross_entropy(self.scale * logits, labels)


def render_crops(identity_ids: list[int], seeds: list[list[int]], size: int) -> torch.Tensor:
    """Aligned face crops of one fresh random photo per (identity, seed)."""
    crops = []
    for identity_id, seed in zip(identity_ids, seeds, strict=True):
        example = sample_example(identity_id, np.random.default_rng(seed))
        crops.append(align_world_face(example.image, example.layout.landmarks, size))
    return crops_to_tensor(crops)


def training_batch(config: FaceTrainingConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([config.seed, 1, step])
    ids = rng.integers(0, config.num_identities, config.batch_size).tolist()
    seeds = [[config.seed, 2, step, j] for j in range(config.batch_size)]
    return render_crops(ids, seeds, config.encoder.input_size), torch.tensor(ids)


@torch.no_grad()
def evaluate_face_encoder(
    model: MiniFaceEncoder, num_identities: int = 200, photos: int = 4, seed: int = 0, batch_size: int = 256
) -> dict[str, float]:
    """Held-out identities: rank-1 identification (gallery = photo 0) and same/different mean cosine."""
    if photos < 2:
        raise ValueError("evaluation needs at least two photos per identity")
    model.eval()
    ids = [EVAL_IDENTITIES.start + i for i in range(num_identities) for _ in range(photos)]
    seeds = [[seed, 3, i, k] for i in range(num_identities) for k in range(photos)]
    embeddings = []
    for start in range(0, len(ids), batch_size):
        crops = render_crops(
            ids[start : start + batch_size], seeds[start : start + batch_size], model.config.input_size
        )
        embeddings.append(model(crops))
    emb = torch.cat(embeddings).view(num_identities, photos, -1)
    gallery, probes = emb[:, 0], emb[:, 1:].reshape(-1, emb.shape[-1])
    owner = torch.arange(num_identities).repeat_interleave(photos - 1)
    similarity = probes @ gallery.T
    rank1 = (similarity.argmax(dim=1) == owner).float().mean().item()
    flat = emb.reshape(-1, emb.shape[-1])
    cos = flat @ flat.T
    who = torch.arange(num_identities).repeat_interleave(photos)
    same = (who[:, None] == who[None]) & ~torch.eye(len(who), dtype=torch.bool)
    different = who[:, None] != who[None]
    return {
        "rank1": rank1,
        "same_cosine": cos[same].mean().item(),
        "different_cosine": cos[different].mean().item(),
        "eval_identities": num_identities,
        "eval_photos": photos,
    }


def train_face_encoder(
    out_dir: str | Path, config: FaceTrainingConfig | None = None, progress: bool = True
) -> dict[str, float]:
    """Train (or resume) a mini face encoder into ``out_dir``; return and save held-out metrics."""
    config = config or FaceTrainingConfig()
    if config.num_identities > len(TRAIN_IDENTITIES):
        raise ValueError(f"at most {len(TRAIN_IDENTITIES)} training identities")
    out = stage_folder(out_dir, config.seed)
    model = MiniFaceEncoder(config.encoder)
    head = ArcMarginHead(config.encoder.embedding_dim, config.num_identities, config.margin, config.scale)

    def step_loss(step: int) -> torch.Tensor:
        crops, labels = training_batch(config, step)
        return head(model(crops), labels)

    return train_evaluate_save(
        out,
        config,
        {"model": model, "head": head},
        step_loss,
        evaluate=lambda: evaluate_face_encoder(model, config.eval_identities, config.eval_photos, seed=config.seed),
        save=model.save_pretrained,
        nested={"encoder": config_to_dict(config.encoder)},
        progress=progress,
        weight_decay=config.weight_decay,
        max_grad_norm=5.0,
        desc="face encoder",
    )


def main(argv: list[str] | None = None) -> None:
    training_command(
        lambda args, config: train_face_encoder(args.out, config),
        FaceTrainingConfig,
        "Train the miniature world's face encoder (ArcFace-style).",
        argv,
        out_help="output folder (config.json, model.safetensors, metrics.json)",
    )


if __name__ == "__main__":
    main()
