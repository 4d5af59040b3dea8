"""The base model's training (latent cache, v-prediction on a zero-terminal-SNR schedule, min-SNR weights, EMA,
the text encoder trained with the UNet, the stop on sample quality) and the assembled StableDiffusionPipeline."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPModel

from infinite_id.world.models import configs
from infinite_id.world.models.attributes import AttributeClassifier
from infinite_id.world.models.compact_tokenizer import world_tokenizer
from infinite_id.world.models.landmarks import LandmarkDetector
from infinite_id.world.trainers.latent_cache import LatentCacheConfig, build_latent_cache, load_latent_cache
from infinite_id.world.trainers.train_clip import clip_image_processor
from infinite_id.world.trainers.train_unet import (
    HISTORY_NAME,
    Ema,
    UnetTrainingConfig,
    loss_weights,
    noise_scheduler,
    train_unet,
    training_inputs,
)

CACHE = LatentCacheConfig(num_identities=3, photos_per_identity=2, seed=1, chunk_size=4)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained stand-ins for the stages the base model reads, and a tiny latent cache."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    configs.make_vae().save_pretrained(root / "vae")
    tokenizer = world_tokenizer()
    configs.make_clip(len(tokenizer)).save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    clip_image_processor().save_pretrained(root / "clip")
    AttributeClassifier().save_pretrained(root / "attributes")
    LandmarkDetector().save_pretrained(root / "landmarks")
    build_latent_cache(root / "latent_cache", root / "vae", CACHE, progress=False)
    return root


def test_latent_cache_is_reproducible_resumable_and_checked(weights, tmp_path):
    cache = load_latent_cache(weights / "latent_cache")
    assert len(cache) == CACHE.size == 6
    assert cache.latents.shape == (6, configs.LATENT_CHANNELS, configs.LATENT_SIZE, configs.LATENT_SIZE)
    assert cache.latents.dtype == torch.float16
    assert 0 < cache.face.max() <= 1 and cache.face.min() >= 0
    assert [(r["identity"], r["photo"]) for r in cache.records] == [(i, k) for i in range(3) for k in range(2)]
    assert all(r["caption"] and "person" in r for r in cache.records)
    # interrupted: the second chunk is missing and the cache unfinished; the build finishes it identically
    copy = tmp_path / "copy"
    build_latent_cache(copy, weights / "vae", CACHE, progress=False)
    (copy / "chunk_00001.npz").unlink()
    (copy / "cache.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished latent cache"):
        load_latent_cache(copy)
    build_latent_cache(copy, weights / "vae", CACHE, progress=False)
    for name in ("chunk_00000.npz", "chunk_00001.npz", "chunk_00001.jsonl", "cache.json"):
        assert (copy / name).read_bytes() == (weights / "latent_cache" / name).read_bytes()
    with pytest.raises(ValueError, match="another config"):
        build_latent_cache(copy, weights / "vae", replace(CACHE, seed=2), progress=False)


def test_the_schedule_ends_in_pure_noise_and_min_snr_keeps_it():
    config = UnetTrainingConfig()
    scheduler = noise_scheduler(config)
    assert scheduler.alphas_cumprod[-1] < 1e-6  # zero terminal SNR
    weights = loss_weights(scheduler, torch.tensor([999, 900, 500, 10]), config)
    assert weights[0] == 1.0 and weights[1] == 1.0  # high noise (layout): full weight, not zero
    alphas = scheduler.alphas_cumprod[10]
    assert torch.isclose(weights[3], config.min_snr_gamma / (alphas / (1 - alphas) + 1))
    assert torch.all(loss_weights(scheduler, torch.arange(1000), replace(config, min_snr_gamma=0.0)) == 1)


def test_training_inputs_are_a_function_of_the_step(weights):
    cache = load_latent_cache(weights / "latent_cache")
    tokenizer = world_tokenizer()
    config = UnetTrainingConfig(batch_size=4, caption_dropout=0.5)
    a, b = training_inputs(config, 3, cache, tokenizer), training_inputs(config, 3, cache, tokenizer)
    torch.testing.assert_close(a.noisy, b.noisy)
    assert torch.equal(a.input_ids, b.input_ids)
    assert a.target.shape == a.noisy.shape and a.face.shape == (4, 1, configs.LATENT_SIZE, configs.LATENT_SIZE)
    # the target is the velocity: noisy = alpha x0 + sigma eps and v = alpha eps - sigma x0
    scheduler = noise_scheduler(config)
    alpha = scheduler.alphas_cumprod[a.timesteps].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - scheduler.alphas_cumprod[a.timesteps]).sqrt().view(-1, 1, 1, 1)
    x0 = alpha * a.noisy - sigma * a.target
    distance = (x0.unsqueeze(1) - cache.latents.float().unsqueeze(0)).abs().flatten(2).amax(dim=2)
    assert torch.all(distance.min(dim=1).values < 1e-4)  # every sample is a cached photo's latents, noised
    assert not torch.equal(a.noisy, training_inputs(config, 4, cache, tokenizer).noisy)


def test_ema_averages_parameters_with_a_warm_up():
    module = torch.nn.Linear(2, 2)
    ema = Ema({"m": module}, decay=0.9)
    start = ema.averaged["m"].weight.clone()
    with torch.no_grad():
        module.weight.add_(1.0)
    ema.update({"m": module})  # first update: decay min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.averaged["m"].weight, start + 0.9)
    assert not ema.averaged["m"].weight.requires_grad and int(ema.updates) == 1


def test_smoke_training_judges_samples_stops_on_a_plateau_and_writes_a_base_model(weights, tmp_path):
    # min_improvement 2 can never be met: after the first evaluation, `patience` more end the run
    config = UnetTrainingConfig(
        steps=50, batch_size=2, eval_images=4, eval_captions=2, eval_steps=2, eval_every=1, patience=2,
        min_improvement=2.0,
    )  # fmt: skip
    metrics = train_unet(tmp_path / "base", weights, config, progress=False)
    history = [json.loads(line) for line in (tmp_path / "base" / HISTORY_NAME).read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]  # stopped at step 3, long before 50
    assert metrics["evaluations"] == 3 and 0 <= metrics["sample_score"] <= 1
    assert metrics["sample_step"] == max(history, key=lambda h: h["score"])["step"]
    assert all(np.isfinite(metrics[f"eval_loss_t{t}"]) for t in (100, 500, 900))
    assert not (tmp_path / "base" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "base" / "best.safetensors").exists()
    assert json.loads((tmp_path / "base" / "metrics.json").read_text())["metrics"] == metrics
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "base")
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr and pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.image_encoder is not None and pipe.feature_extractor is not None
    # the shipped text encoder is the EMA of the one trained with the UNet, not the mini CLIP's tower
    tower = CLIPModel.from_pretrained(weights / "clip").text_model.state_dict()
    shipped = pipe.text_encoder.state_dict()
    assert set(tower) == set(shipped) and any(not torch.equal(tower[k], shipped[k]) for k in tower)
    image = pipe(
        "a photo of a man wearing a red shirt, on the beach",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)
