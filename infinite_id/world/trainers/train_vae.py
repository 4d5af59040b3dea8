"""Train the miniature world's VAE (diffusers ``AutoencoderKL``, 64x64 RGB <-> 8x16x16) on renders.

    python -m infinite_id.world.trainers.train_vae --out DIR --face-encoder DIR --attributes DIR --steps 3000

The VAE is the ceiling of every generated image, so its loss is made of what the metrics measure:

- L1 + MSE reconstruction of a posterior sample's decoding, weighted up on the face (the layout's face mask);
- an identity term: 1 - cosine between the frozen mini face encoder's embeddings of the original and the
  reconstruction, both aligned by a differentiable warp onto the face template with the true landmarks;
- a feature term: the relative squared error of the frozen attribute classifier's feature maps (its stem and
  every residual block), which carry style textures, accessories and clothing;
- a small KL term (as the Stable Diffusion VAE uses).

At the end the latents are centred and scaled per channel by rewriting the first and last 1x1 convolutions
(``quant_conv`` and ``post_quant_conv``): the encoder then emits zero-mean, unit-variance latents and the decoder
reads them, with ``scaling_factor = 1``, so any diffusers pipeline uses them unchanged. Batches are a pure
function of ``(seed, step)`` (resumable). Evaluation: PSNR (whole image and face) on held-out identities.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

from ...faces.alignment import estimate_similarity, invert_transform
from ..models import configs
from ..models.attributes import AttributeClassifier, images_to_tensor
from ..models.face_model import MiniFaceEncoder, world_face_template
from ..scene.dataset import sample_example
from ..scene.factors import (
    ACCESSORIES,
    EVAL_IDENTITIES,
    STYLES,
    TRAIN_IDENTITIES,
    Nuisance,
    Semantics,
    identity_from_id,
)
from ..scene.render import accessory_mask
from .train_utils import stage_folder, train_evaluate_save, training_command


@dataclass
class VaeTrainingConfig:
    num_identities: int = 100_000
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-6
    face_weight: float = 3.0  # extra pixel-loss weight on the face mask (1 + face_weight inside it)
    identity_weight: float = 0.3  # 1 - cosine of the face encoder's embeddings
    feature_weight: float = 0.1  # relative error of the attribute classifier's feature maps
    seed: int = 0
    eval_images: int = 200
    checkpoint_every: int = 250


@dataclass
class VaeBatch:
    pixels: torch.Tensor  # (B, 3, 64, 64) in [-1, 1]
    face_mask: torch.Tensor  # (B, 1, 64, 64) float
    face_grid: torch.Tensor  # (B, S, S, 2): grid_sample coordinates of the aligned face crop
    accessory_mask: torch.Tensor | None = None  # (B, 1, 64, 64) float: what the accessory changes (refinement)


def face_sampling_grid(landmarks, image_size: int, crop_size: int) -> torch.Tensor:
    """``grid_sample`` coordinates (S, S, 2) that warp an image onto the mini face template (the differentiable
    twin of :func:`infinite_id.world.models.face_model.align_world_face`)."""
    matrix = estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), world_face_template(crop_size))
    inverse = invert_transform(matrix)  # output pixel index -> input pixel index
    v, u = np.meshgrid(np.arange(crop_size), np.arange(crop_size), indexing="ij")
    points = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    source = (inverse @ points).T.reshape(crop_size, crop_size, 2)
    return torch.from_numpy((2 * source + 1) / image_size - 1).float()  # align_corners=False normalisation


def _masks(masks) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks)).float().unsqueeze(1)


def _batch_from_examples(examples, crop_size: int, accessory_masks=None) -> VaeBatch:
    size = examples[0].image.size[0]
    return VaeBatch(
        pixels=images_to_tensor([e.image for e in examples]),
        face_mask=_masks([e.layout.face_mask for e in examples]),
        face_grid=torch.stack([face_sampling_grid(e.layout.landmarks, size, crop_size) for e in examples]),
        accessory_mask=None if accessory_masks is None else _masks(accessory_masks),
    )


def training_batch(config: VaeTrainingConfig, step: int, crop_size: int = 40) -> VaeBatch:
    rng = np.random.default_rng([config.seed, 41, step])
    ids = rng.integers(0, min(config.num_identities, len(TRAIN_IDENTITIES)), config.batch_size).tolist()
    examples = [sample_example(i, np.random.default_rng([config.seed, 42, step, j])) for j, i in enumerate(ids)]
    return _batch_from_examples(examples, crop_size)


class PerceptualLoss(nn.Module):
    """The frozen face encoder and attribute classifier as loss networks (see the module docstring)."""

    def __init__(self, face_encoder: MiniFaceEncoder, attributes: AttributeClassifier) -> None:
        super().__init__()
        self.face_encoder = face_encoder.eval().requires_grad_(False)
        self.attributes = attributes.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:  # the loss networks stay in eval mode (BatchNorm)
        return self

    def feature_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        backbone = self.attributes.backbone
        maps = [backbone.stem(pixels)]
        for block in backbone.blocks:
            maps.append(block(maps[-1]))
        return maps

    def identity_loss(self, reconstruction: torch.Tensor, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        def embed(x: torch.Tensor) -> torch.Tensor:
            return self.face_encoder(F.grid_sample(x, grid, mode="bilinear", align_corners=False))

        return (1 - (embed(reconstruction) * embed(pixels).detach()).sum(dim=1)).mean()

    def feature_loss(self, reconstruction: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self.feature_maps(pixels)
        losses = [
            (a - b).pow(2).mean() / b.pow(2).mean().clamp_min(1e-6)
            for a, b in zip(self.feature_maps(reconstruction), targets, strict=True)
        ]
        return torch.stack(losses).mean()

    def texture_loss(self, reconstruction: torch.Tensor, pixels: torch.Tensor, layers: int = 3) -> torch.Tensor:
        """Relative squared error of the Gram matrices (channel correlations, position-free) of the first
        ``layers`` feature maps: the statistics of brush strokes, hatching and dots, which an aligned loss averages
        away when their phase is uncertain."""

        def gram(x: torch.Tensor) -> torch.Tensor:
            features = x.flatten(2)
            return features @ features.transpose(1, 2) / features.shape[-1]

        with torch.no_grad():
            targets = [gram(m) for m in self.feature_maps(pixels)[:layers]]
        losses = [
            (gram(a) - b).pow(2).mean() / b.pow(2).mean().clamp_min(1e-6)
            for a, b in zip(self.feature_maps(reconstruction)[:layers], targets, strict=True)
        ]
        return torch.stack(losses).mean()

    def add_terms(
        self,
        loss: torch.Tensor,
        reconstruction: torch.Tensor,
        batch: VaeBatch,
        identity_weight: float,
        feature_weight: float,
        texture_weight: float = 0.0,
    ) -> torch.Tensor:
        """``loss`` plus the weighted identity, feature and texture terms (a zero weight skips its network)."""
        if identity_weight:
            loss = loss + identity_weight * self.identity_loss(reconstruction, batch.pixels, batch.face_grid)
        if feature_weight:
            loss = loss + feature_weight * self.feature_loss(reconstruction, batch.pixels)
        if texture_weight:
            loss = loss + texture_weight * self.texture_loss(reconstruction, batch.pixels)
        return loss


def pixel_weights(batch: VaeBatch, face_weight: float, accessory_weight: float = 0.0) -> torch.Tensor:
    """Per-pixel loss weights ``1 + face_weight * face + accessory_weight * accessory``, shape (B, 1, H, W)."""
    weight = 1 + face_weight * batch.face_mask
    if accessory_weight and batch.accessory_mask is not None:
        weight = weight + accessory_weight * batch.accessory_mask
    return weight


def weighted_pixel_error(reconstruction: torch.Tensor, pixels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 + MSE per pixel, their weighted mean (``weight`` from :func:`pixel_weights`)."""
    error = reconstruction - pixels
    return (weight * (error.abs() + error.pow(2))).mean() / weight.mean()


def vae_loss(
    vae: AutoencoderKL, batch: VaeBatch, config: VaeTrainingConfig, perceptual: PerceptualLoss | None = None
) -> torch.Tensor:
    posterior = vae.encode(batch.pixels).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    loss = weighted_pixel_error(reconstruction, batch.pixels, pixel_weights(batch, config.face_weight))
    if perceptual is not None:
        loss = perceptual.add_terms(loss, reconstruction, batch, config.identity_weight, config.feature_weight)
    return loss + config.kl_weight * posterior.kl().mean()


@torch.no_grad()
def normalise_latents(vae: AutoencoderKL, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrite ``quant_conv`` and ``post_quant_conv`` so the encoder emits ``(z - mean) / std`` per channel and
    the decoder reads it: the same images, zero-mean unit-variance latents, ``scaling_factor`` 1."""
    channels = mean.numel()
    q = vae.quant_conv  # 1x1: features -> (posterior mean, log-variance), 2C channels
    q.weight[:channels] /= std.view(-1, 1, 1, 1)
    q.bias[:channels] = (q.bias[:channels] - mean) / std
    q.bias[channels:] -= 2 * torch.log(std)
    p = vae.post_quant_conv  # 1x1: z -> decoder input; z_old = z_new * std + mean
    p.bias += (p.weight[:, :, 0, 0] @ mean).view(-1)
    p.weight *= std.view(1, -1, 1, 1)
    vae.register_to_config(scaling_factor=1.0)


def held_out_examples(num_images: int, seed: int = 0) -> list:
    return [sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 43, i])) for i in range(num_images)]


@torch.no_grad()
def round_trip(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoded images in [-1, 1], posterior-mean latents), in batches."""
    vae.eval()
    decoded, latents = [], []
    for start in range(0, len(pixels), batch_size):
        mean = vae.encode(pixels[start : start + batch_size]).latent_dist.mode()
        latents.append(mean)
        decoded.append(vae.decode(mean).sample.clamp(-1, 1))
    return torch.cat(decoded), torch.cat(latents)


def psnr_db(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, span: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB of ``(N, C, H, W)`` images whose values span ``span`` (2 for [-1, 1], 255 for 8 bits),
    over the pixels where ``mask`` (``(N, 1, H, W)``, 0/1) is set: one measure for training and for the ceilings."""
    squared = ((a - b) / span).pow(2)
    if mask is None:
        mse = squared.mean(dim=(1, 2, 3))
    else:
        mse = (squared * mask).sum(dim=(1, 2, 3)) / (a.shape[1] * mask.sum(dim=(1, 2, 3))).clamp_min(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, num_images: int = 200, seed: int = 0) -> dict[str, float]:
    """PSNR (images in [0, 1]; whole image and face region) and latent statistics on held-out identities."""
    batch = _batch_from_examples(held_out_examples(num_images, seed), crop_size=8)
    decoded, latents = round_trip(vae, batch.pixels)
    per_channel = latents.transpose(0, 1).flatten(1)
    return {
        "psnr_db": float(psnr_db(decoded, batch.pixels).mean()),
        "psnr_face_db": float(psnr_db(decoded, batch.pixels, batch.face_mask).mean()),
        "latent_mean": latents.mean().item(),
        "latent_std": latents.std().item(),
        "latent_channel_mean_abs_max": per_channel.mean(dim=1).abs().max().item(),
        "latent_channel_std_min": per_channel.std(dim=1).min().item(),
        "latent_channel_std_max": per_channel.std(dim=1).max().item(),
        "eval_images": num_images,
    }


@torch.no_grad()
def latent_statistics(vae: AutoencoderKL, config: VaeTrainingConfig, num_images: int = 256):
    """Per-channel mean and std of posterior-mean latents of training renders: the batch the step after the
    last would have drawn (training identities, never the held-out ones)."""
    pixels = training_batch(replace(config, batch_size=num_images), step=config.steps).pixels
    _, latents = round_trip(vae, pixels)
    per_channel = latents.transpose(0, 1).flatten(1)
    return per_channel.mean(dim=1), per_channel.std(dim=1).clamp_min(1e-4)


def load_perceptual_loss(face_encoder_dir: str | Path, attributes_dir: str | Path) -> PerceptualLoss:
    return PerceptualLoss(
        MiniFaceEncoder.from_pretrained(face_encoder_dir), AttributeClassifier.from_pretrained(attributes_dir)
    )


def train_vae(
    out_dir: str | Path,
    config: VaeTrainingConfig | None = None,
    face_encoder_dir: str | Path | None = None,
    attributes_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train (or resume) the mini VAE into ``out_dir`` (diffusers layout); return and save held-out metrics.

    Without the loss networks' folders only the pixel terms are used."""
    config = config or VaeTrainingConfig()
    out = stage_folder(out_dir, config.seed)
    vae = configs.make_vae()
    perceptual = None
    if face_encoder_dir is not None and attributes_dir is not None:
        perceptual = load_perceptual_loss(face_encoder_dir, attributes_dir)
    crop_size = perceptual.face_encoder.config.input_size if perceptual is not None else 8

    def normalise_and_evaluate() -> dict:
        mean, std = latent_statistics(vae, config, num_images=max(config.batch_size, min(config.eval_images, 256)))
        normalise_latents(vae, mean, std)
        metrics = evaluate_vae(vae, config.eval_images, seed=config.seed)
        metrics["scaling_factor"] = vae.config.scaling_factor
        metrics["loss_networks"] = perceptual is not None
        return metrics

    return train_evaluate_save(
        out,
        config,
        {"vae": vae},
        lambda step: vae_loss(vae, training_batch(config, step, crop_size), config, perceptual),
        normalise_and_evaluate,
        vae.save_pretrained,
        progress=progress,
        desc="VAE",
    )


@dataclass
class DecoderRefinementConfig:
    """Refine the decoder of a trained VAE with its encoder frozen. The latents stay bit for bit what they were, so
    the latent cache and a base UNet trained on it stay valid; only what the decoder draws from them changes.

    The levers aim at what the first stage's round trip loses (docs/world.md): small accessories (extra pixel
    weight on what the accessory changes, see :func:`~infinite_id.world.scene.render.accessory_mask`), style
    textures (a Gram-matrix texture term), and the rare classes themselves (every style and accessory drawn
    equally often instead of half photos and 30% without an accessory)."""

    num_identities: int = 100_000
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-4  # a tenth of the first stage's: one Adam step at 3e-4 already costs 1.6 dB
    face_weight: float = 3.0
    accessory_weight: float = 8.0  # extra pixel weight on the accessory mask
    identity_weight: float = 0.3
    feature_weight: float = 0.1
    texture_weight: float = 0.5  # Gram matrices of the attribute classifier's first feature maps
    balanced_semantics: bool = True  # styles and accessories drawn uniformly
    seed: int = 0
    eval_images: int = 200
    checkpoint_every: int = 250


def balanced_semantics(rng: np.random.Generator) -> Semantics:
    """Semantics with every style and every accessory (none included) equally likely."""
    semantics = Semantics.sample(rng, {s: 1.0 for s in STYLES})
    return replace(semantics, accessory=ACCESSORIES[int(rng.integers(len(ACCESSORIES)))])


def refinement_batch(config: DecoderRefinementConfig, step: int, crop_size: int = 40) -> VaeBatch:
    """A batch of training renders with face and accessory masks; a pure function of ``(seed, step)``."""
    rng = np.random.default_rng([config.seed, 44, step])
    ids = rng.integers(0, min(config.num_identities, len(TRAIN_IDENTITIES)), config.batch_size).tolist()
    examples, masks = [], []
    for j, identity_id in enumerate(ids):
        example_rng = np.random.default_rng([config.seed, 45, step, j])
        # drawn here as sample_example would draw it (the same stream), so the mask can re-render it
        semantics = balanced_semantics(example_rng) if config.balanced_semantics else Semantics.sample(example_rng)
        example = sample_example(identity_id, example_rng, semantics=semantics)
        examples.append(example)
        nuisance = Nuisance.from_dict(example.labels["nuisance"])
        masks.append(accessory_mask(example.image, identity_from_id(identity_id), semantics, nuisance))
    return _batch_from_examples(examples, crop_size, masks)


def refinement_loss(
    vae: AutoencoderKL, batch: VaeBatch, config: DecoderRefinementConfig, perceptual: PerceptualLoss
) -> torch.Tensor:
    """The decoder's loss on latents of the frozen encoder (posterior samples, as the first stage decoded)."""
    with torch.no_grad():
        latents = vae.encode(batch.pixels).latent_dist.sample()
    reconstruction = vae.decode(latents).sample
    weights = pixel_weights(batch, config.face_weight, config.accessory_weight)
    loss = weighted_pixel_error(reconstruction, batch.pixels, weights)
    return perceptual.add_terms(
        loss, reconstruction, batch, config.identity_weight, config.feature_weight, config.texture_weight
    )


def refine_decoder(
    out_dir: str | Path,
    vae_dir: str | Path,
    face_encoder_dir: str | Path,
    attributes_dir: str | Path,
    config: DecoderRefinementConfig | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Refine (or resume refining) the decoder of the VAE in ``vae_dir`` into ``out_dir``; the encoder and the
    latent normalisation are copied unchanged. Returns and saves held-out metrics."""
    config = config or DecoderRefinementConfig()
    out = stage_folder(out_dir, config.seed)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    frozen = [vae.encoder, vae.quant_conv]
    for module in frozen:
        module.eval().requires_grad_(False)
    perceptual = load_perceptual_loss(face_encoder_dir, attributes_dir)
    crop_size = perceptual.face_encoder.config.input_size

    def evaluate() -> dict:
        metrics = evaluate_vae(vae, config.eval_images, seed=config.seed)
        metrics["scaling_factor"] = vae.config.scaling_factor
        metrics["encoder_from"] = str(vae_dir)
        return metrics

    return train_evaluate_save(
        out,
        config,
        {"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv},
        lambda step: refinement_loss(vae, refinement_batch(config, step, crop_size), config, perceptual),
        evaluate,
        vae.save_pretrained,
        progress=progress,
        desc="VAE decoder",
    )


def main(argv: list[str] | None = None) -> None:
    training_command(
        lambda args, config: train_vae(args.out, config, args.face_encoder, args.attributes),
        VaeTrainingConfig,
        "Train the miniature world's VAE.",
        argv,
        out_help="output folder (diffusers AutoencoderKL layout)",
        paths=(("face-encoder", "the mini face encoder (loss network)"), ("attributes", "the attribute classifier")),
    )


if __name__ == "__main__":
    main()
