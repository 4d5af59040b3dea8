"""Random SD 1.5- and SDXL-shaped components built from configs in-process (no download), as diffusers' own
tests do. Used by the test suites and the CPU benchmarks: every code path of the real loaders runs on them, but their
weights are random, so their images are noise. The SD 1.5 ones are the smoke model's (:mod:`infinite_id.smoke_model`,
production code); production code never imports this module."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from infinite_id.clip_tokenizer import clip_tokenizer
from infinite_id.models.unet_configs import build_unet
from infinite_id.smoke_model import tiny_image_encoder, tiny_sd15_pipeline, tiny_sd15_unet, tiny_text_config, tiny_vae

FACE_DIM = 16


def mid_sd15_unet(cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """A mid-size SD-1.5-shaped UNet (49M parameters, attention at two of its three resolutions) for CPU benchmarks."""
    return build_unet("mid-sd15", cross_attention_dim=cross_attention_dim)


def tiny_sdxl_unet() -> UNet2DConditionModel:
    return build_unet("tiny-sdxl")


def tiny_sdxl_pipeline(with_image_encoder: bool = True) -> StableDiffusionXLPipeline:
    torch.manual_seed(0)
    image_encoder, processor = tiny_image_encoder() if with_image_encoder else (None, None)
    return StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_text_config()).eval(),
        text_encoder_2=CLIPTextModelWithProjection(tiny_text_config()).eval(),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=tiny_sdxl_unet(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False),
        image_encoder=image_encoder,
        feature_extractor=processor,
        force_zeros_for_empty_prompt=False,
    )


__all__ = [
    "FACE_DIM",
    "mid_sd15_unet",
    "save_tiny_base_model",
    "tiny_image_encoder",
    "tiny_sd15_pipeline",
    "tiny_sd15_unet",
    "tiny_sdxl_pipeline",
    "tiny_sdxl_unet",
    "tiny_vae",
]


def save_tiny_base_model(directory: str | Path, family: str = "sd15", with_image_encoder: bool = True) -> Path:
    """Write a tiny base model in diffusers layout; load it back with ``InfiniteIDPipeline.from_pretrained``."""
    directory = Path(directory)
    pipe = tiny_sd15_pipeline(with_image_encoder) if family == "sd15" else tiny_sdxl_pipeline(with_image_encoder)
    pipe.save_pretrained(directory)
    return directory
