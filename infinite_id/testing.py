"""Random SD 1.5- and SDXL-shaped components built from configs in-process (no download), as diffusers' own
tests do. Used by the test suites, the CPU benchmarks and ``infinite-id`` smoke runs: every code path of the
real loaders runs on them, but their weights are random, so their images are noise."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from infinite_id.models.unet_configs import build_unet
from infinite_id.tokenizer import clip_tokenizer

FACE_DIM = 16


def _text_config(hidden: int = 32, projection: int = 32) -> CLIPTextConfig:
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


def mid_sd15_unet(cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """A mid-size SD-1.5-shaped UNet (49M parameters, attention at two of its three resolutions) for CPU benchmarks."""
    return build_unet("mid-sd15", cross_attention_dim=cross_attention_dim)


def tiny_sdxl_unet() -> UNet2DConditionModel:
    return build_unet("tiny-sdxl")


def tiny_sd15_pipeline(
    with_image_encoder: bool = True, unet: UNet2DConditionModel | None = None
) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    image_encoder, processor = tiny_image_encoder() if with_image_encoder else (None, None)
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(_text_config()).eval(),
        tokenizer=clip_tokenizer(),
        unet=unet if unet is not None else tiny_sd15_unet(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=processor,
        image_encoder=image_encoder,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(with_image_encoder: bool = True) -> StableDiffusionXLPipeline:
    torch.manual_seed(0)
    image_encoder, processor = tiny_image_encoder() if with_image_encoder else (None, None)
    return StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(_text_config()).eval(),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()).eval(),
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
