"""The tiny SD-1.5-shaped components of the *smoke model*: random weights, built from configs in-process.

Production code: ``infinite_id.defaults.build_smoke_model`` falls back to them when no default model is available, so
the command line runs anywhere, offline (its images are noise). The test suites and benchmarks build on the same
components through :mod:`infinite_id.testing`, which production code does not import.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from .clip_tokenizer import clip_tokenizer
from .models.unet_configs import build_unet

__all__ = ["tiny_image_encoder", "tiny_sd15_pipeline", "tiny_sd15_unet", "tiny_text_config", "tiny_vae"]


def tiny_text_config(hidden: int = 32, projection: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=projection,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        max_position_embeddings=77,
        hidden_act="gelu",
    )


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )


def tiny_image_encoder(
    hidden: int = 32, image_size: int = 32
) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=hidden,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        intermediate_size=37,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=image_size)
    return CLIPVisionModelWithProjection(config).eval(), processor


def tiny_sd15_unet() -> UNet2DConditionModel:
    return build_unet("tiny-sd15")


def tiny_sd15_pipeline(
    with_image_encoder: bool = True, unet: UNet2DConditionModel | None = None
) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    image_encoder, processor = tiny_image_encoder() if with_image_encoder else (None, None)
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_text_config()).eval(),
        tokenizer=clip_tokenizer(),
        unet=unet if unet is not None else tiny_sd15_unet(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=processor,
        image_encoder=image_encoder,
        requires_safety_checker=False,
    )
