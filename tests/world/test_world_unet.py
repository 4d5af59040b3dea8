"""The base UNet's training and the assembled miniature base model (a StableDiffusionPipeline folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from infinite_id.world import configs
from infinite_id.world.tokenizer import world_tokenizer
from infinite_id.world.train_clip import clip_image_processor
from infinite_id.world.train_unet import FrozenConditioning, UnetTrainingConfig, train_unet, training_inputs


@pytest.fixture(scope="module")
def frozen_dirs(tmp_path_factory):
    """Untrained mini VAE and mini CLIP folders, standing in for trained ones."""
    root = tmp_path_factory.mktemp("frozen")
    torch.manual_seed(0)
    configs.make_vae().save_pretrained(root / "vae")
    tokenizer = world_tokenizer()
    configs.make_clip(len(tokenizer)).save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    clip_image_processor().save_pretrained(root / "clip")
    return root / "vae", root / "clip"


def test_training_inputs(frozen_dirs):
    frozen = FrozenConditioning(*frozen_dirs)
    config = UnetTrainingConfig(batch_size=3, caption_dropout=0.5)
    noisy, timesteps, context, noise = training_inputs(config, 0, frozen)
    assert noisy.shape == noise.shape == (3, configs.LATENT_CHANNELS, configs.LATENT_SIZE, configs.LATENT_SIZE)
    assert context.shape == (3, configs.MAX_TOKENS, configs.TEXT_WIDTH)
    assert timesteps.shape == (3,) and int(timesteps.max()) < 1000
    again = training_inputs(config, 0, frozen)
    torch.testing.assert_close(again[0], noisy)


def test_smoke_training_writes_a_loadable_base_model(frozen_dirs, tmp_path):
    config = UnetTrainingConfig(steps=2, batch_size=2, eval_images=4)
    metrics = train_unet(tmp_path, *frozen_dirs, config, progress=False)
    assert all(np.isfinite(metrics[f"eval_loss_t{t}"]) for t in (100, 500, 900))
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == metrics
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert pipe.image_encoder is not None and pipe.feature_extractor is not None
    image = pipe(
        "a photo of a man wearing a red shirt, on the beach",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)
