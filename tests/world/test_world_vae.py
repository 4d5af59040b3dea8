"""The mini VAE's training: the loss and its loss networks, the differentiable face warp, latent normalisation
baked into the weights, and a smoke run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from infinite_id.world.models import configs
from infinite_id.world.models.attributes import AttributeClassifier, images_to_tensor
from infinite_id.world.models.face_model import MiniFaceEncoder, align_world_face, crops_to_tensor
from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.trainers.train_vae import (
    PerceptualLoss,
    VaeTrainingConfig,
    face_sampling_grid,
    normalise_latents,
    train_vae,
    training_batch,
    vae_loss,
    weighted_pixel_error,
)


def _perceptual() -> PerceptualLoss:
    torch.manual_seed(1)
    return PerceptualLoss(MiniFaceEncoder(), AttributeClassifier())


def test_batches_are_a_function_of_the_step():
    config = VaeTrainingConfig(batch_size=2)
    batch = training_batch(config, 5)
    assert batch.pixels.shape == (2, 3, configs.IMAGE_SIZE, configs.IMAGE_SIZE)
    assert batch.face_mask.shape == (2, 1, configs.IMAGE_SIZE, configs.IMAGE_SIZE)
    assert 0 < batch.face_mask.mean() < 0.5
    assert batch.face_grid.shape == (2, 40, 40, 2)
    again = training_batch(config, 5)
    torch.testing.assert_close(batch.pixels, again.pixels)
    torch.testing.assert_close(batch.face_grid, again.face_grid)


def test_the_differentiable_face_warp_matches_the_alignment():
    """grid_sample with the face grid gives the crop align_world_face makes (inside the image)."""
    for i in range(3):
        example = sample_example(i, np.random.default_rng(i))
        reference = crops_to_tensor([align_world_face(example.image, example.layout.landmarks, 40)])
        grid = face_sampling_grid(example.layout.landmarks, configs.IMAGE_SIZE, 40)[None]
        warped = F.grid_sample(images_to_tensor([example.image]), grid, align_corners=False)
        inside = (grid.abs() < 0.97).all(dim=-1).unsqueeze(1).expand_as(warped)
        assert (reference - warped).abs()[inside].mean() < 0.02


def test_loss_trains_the_vae_and_leaves_the_loss_networks_frozen():
    config = VaeTrainingConfig(batch_size=2)
    batch = training_batch(config, 0)
    torch.manual_seed(0)
    vae = configs.make_vae()
    perceptual = _perceptual()
    perceptual.train()  # a loss network must stay in eval mode
    assert not perceptual.face_encoder.training and not perceptual.attributes.training
    pixel_only = vae_loss(vae, batch, replace(config, identity_weight=0.0, feature_weight=0.0), perceptual)
    torch.manual_seed(0)
    full = vae_loss(vae, batch, config, perceptual)
    assert torch.isfinite(full) and full > pixel_only > 0
    full.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())
    assert all(p.grad is None for p in perceptual.parameters())


def test_the_face_weight_counts_the_face_more():
    batch = training_batch(VaeTrainingConfig(batch_size=2), 0)
    mask = batch.face_mask
    face_error = batch.pixels + 0.5 * mask
    background_error = batch.pixels + 0.5 * (1 - mask)
    flat = weighted_pixel_error(face_error, batch.pixels, mask, 0.0)
    assert weighted_pixel_error(face_error, batch.pixels, mask, 10.0) > 2 * flat
    assert weighted_pixel_error(background_error, batch.pixels, mask, 10.0) < weighted_pixel_error(
        background_error, batch.pixels, mask, 0.0
    )


def test_normalising_the_latents_keeps_the_images():
    torch.manual_seed(0)
    vae = configs.make_vae().eval()
    pixels = training_batch(VaeTrainingConfig(batch_size=4), 0).pixels
    with torch.no_grad():
        before = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
        latents = vae.encode(pixels).latent_dist.mode().transpose(0, 1).flatten(1)
        mean, std = latents.mean(dim=1), latents.std(dim=1)
        posterior_std = vae.encode(pixels).latent_dist.std
        normalise_latents(vae, mean, std)
        new = vae.encode(pixels).latent_dist
        after = vae.decode(new.mode()).sample
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    flat = new.mode().transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros_like(mean), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(dim=1), torch.ones_like(std), atol=1e-4, rtol=0)
    torch.testing.assert_close(new.std, posterior_std / std.view(1, -1, 1, 1), atol=1e-5, rtol=1e-4)
    assert vae.config.scaling_factor == 1.0


def test_smoke_training_writes_normalised_latents(tmp_path):
    face, attributes = tmp_path / "face", tmp_path / "attributes"
    _perceptual().face_encoder.save_pretrained(face)
    _perceptual().attributes.save_pretrained(attributes)
    config = VaeTrainingConfig(steps=2, batch_size=2, eval_images=4)
    metrics = train_vae(tmp_path / "vae", config, face, attributes, progress=False)
    assert metrics["psnr_db"] > 0 and metrics["psnr_face_db"] > 0 and metrics["loss_networks"] is True
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae")
    assert vae.config.scaling_factor == 1.0 == metrics["scaling_factor"]
    assert vae.config.latent_channels == configs.LATENT_CHANNELS
    assert abs(metrics["latent_mean"]) < 0.5 and 0.5 < metrics["latent_std"] < 2.0
    assert json.loads((tmp_path / "vae" / "metrics.json").read_text())["metrics"] == metrics
