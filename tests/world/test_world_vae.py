"""The mini VAE's training: loss, scaling factor written to the diffusers config, a smoke run."""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKL

from infinite_id.world import configs
from infinite_id.world.train_vae import VaeTrainingConfig, train_vae, training_batch, vae_loss


def test_batches_and_loss():
    config = VaeTrainingConfig(batch_size=2)
    pixels = training_batch(config, 5)
    assert pixels.shape == (2, 3, configs.IMAGE_SIZE, configs.IMAGE_SIZE)
    torch.testing.assert_close(pixels, training_batch(config, 5))
    torch.manual_seed(0)
    vae = configs.make_vae()
    loss = vae_loss(vae, pixels, kl_weight=1e-6)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())


def test_smoke_training_sets_the_scaling_factor(tmp_path):
    metrics = train_vae(tmp_path, VaeTrainingConfig(steps=2, batch_size=2, eval_images=4), progress=False)
    assert metrics["psnr_db"] > 0
    vae = AutoencoderKL.from_pretrained(tmp_path)
    assert vae.config.scaling_factor == metrics["scaling_factor"]
    assert abs(vae.config.scaling_factor * metrics["latent_std"] - 1.0) < 1e-3
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == metrics
