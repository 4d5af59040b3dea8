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
from infinite_id.world.scene.factors import ACCESSORIES, STYLES, Nuisance, Semantics, identity_from_id
from infinite_id.world.scene.render import accessory_mask, render
from infinite_id.world.trainers.train_vae import (
    DecoderRefinementConfig,
    PerceptualLoss,
    VaeTrainingConfig,
    balanced_semantics,
    face_sampling_grid,
    normalise_latents,
    pixel_weights,
    refine_decoder,
    refinement_batch,
    refinement_loss,
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
    flat = weighted_pixel_error(face_error, batch.pixels, pixel_weights(batch, 0.0))
    heavy, light = pixel_weights(batch, 10.0), pixel_weights(batch, 0.0)
    assert weighted_pixel_error(face_error, batch.pixels, heavy) > 2 * flat
    assert weighted_pixel_error(background_error, batch.pixels, heavy) < weighted_pixel_error(
        background_error, batch.pixels, light
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


def test_the_accessory_mask_is_what_the_accessory_changes():
    identity, nuisance = identity_from_id(3), Nuisance.sample(np.random.default_rng(3))
    plain_semantics = Semantics(accessory="none", style="photo")
    plain = render(identity, plain_semantics, nuisance)
    assert not accessory_mask(plain, identity, plain_semantics, nuisance).any()
    for accessory in ("earrings", "necklace", "hat"):
        semantics = Semantics(accessory=accessory, style="photo")
        image = render(identity, semantics, nuisance)
        mask = accessory_mask(image, identity, semantics, nuisance)
        assert 0 < mask.mean() < 0.2, accessory
        changed = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max(axis=2)
        assert changed[~mask].max() <= 1  # outside the mask the image is the accessory-free render
    earrings = accessory_mask(render(identity, Semantics(accessory="earrings"), nuisance), identity,
                              Semantics(accessory="earrings"), nuisance)  # fmt: skip
    assert earrings.mean() < 0.05  # a few dozen pixels: what a mean over the image would drown


def test_refinement_batches_are_balanced_masked_and_a_function_of_the_step():
    config = DecoderRefinementConfig(batch_size=6)
    batch = refinement_batch(config, 3, crop_size=8)
    assert batch.accessory_mask.shape == batch.face_mask.shape == (6, 1, configs.IMAGE_SIZE, configs.IMAGE_SIZE)
    torch.testing.assert_close(batch.pixels, refinement_batch(config, 3, crop_size=8).pixels)
    assert not torch.equal(batch.pixels, refinement_batch(config, 4, crop_size=8).pixels)
    weights = pixel_weights(batch, 0.0, 8.0)
    torch.testing.assert_close(weights, 1 + 8.0 * batch.accessory_mask)
    draws = [balanced_semantics(np.random.default_rng(i)) for i in range(600)]
    for name, values in (("style", STYLES), ("accessory", ACCESSORIES)):
        shares = [sum(getattr(d, name) == v for d in draws) / len(draws) for v in values]
        assert max(shares) < 2.2 / len(values) and min(shares) > 0.4 / len(values), (name, shares)


def test_the_refinement_trains_the_decoder_and_keeps_the_encoder(tmp_path):
    torch.manual_seed(0)
    first = configs.make_vae()
    first.save_pretrained(tmp_path / "vae")
    face, attributes = tmp_path / "face", tmp_path / "attributes"
    _perceptual().face_encoder.save_pretrained(face)
    _perceptual().attributes.save_pretrained(attributes)
    config = DecoderRefinementConfig(steps=2, batch_size=2, eval_images=4)
    metrics = refine_decoder(tmp_path / "refined", tmp_path / "vae", face, attributes, config, progress=False)
    refined = AutoencoderKL.from_pretrained(tmp_path / "refined")
    for name, value in first.state_dict().items():
        same = torch.equal(value, refined.state_dict()[name])
        assert same == (not name.startswith(("decoder.", "post_quant_conv."))), name
    assert metrics["psnr_db"] > 0 and metrics["encoder_from"] == str(tmp_path / "vae")
    # the loss reaches the decoder only
    loss = refinement_loss(refined, refinement_batch(config, 0, 40), config, _perceptual())
    loss.backward()
    assert all(p.grad is None for p in refined.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in refined.decoder.parameters())


def test_the_texture_loss_sees_texture_an_average_colour_keeps():
    perceptual = _perceptual()
    pixels = training_batch(VaeTrainingConfig(batch_size=2), 0).pixels
    assert perceptual.texture_loss(pixels, pixels) == 0
    blurred = F.avg_pool2d(pixels, 5, stride=1, padding=2, count_include_pad=False)
    assert perceptual.texture_loss(blurred, pixels) > 0
