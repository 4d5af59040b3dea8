"""Configurations of the miniature world's models, small enough to train from scratch on two CPU cores.

The base model is an SD-1.5-shaped text-to-image model in diffusers layout (VAE + UNet2DConditionModel + CLIP
text encoder + tokenizer), so the real pipeline loads it unchanged:

- VAE: AutoencoderKL, 64x64 RGB <-> 8x16x16 latents (three blocks, two downsamplings);
- UNet: UNet2DConditionModel on 16x16 latents, block_out_channels (64, 128, 256), cross-attention width 128;
- mini CLIP: CLIPModel with a 3-layer text tower (compact world tokenizer, 48 positions) and a 4-layer ViT image
  tower on 64x64 images (8x8 patches), projection 128. Its text tower is the base model's text encoder and its
  image tower the CLIP branch of the identity encoder and the CLIP-T/CLIP-I metric;
- mini face encoder: see :mod:`infinite_id.world.models.face_model`.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from .face_model import FaceEncoderConfig

IMAGE_SIZE = 64
LATENT_CHANNELS = 8
LATENT_SIZE = 16  # IMAGE_SIZE / 4
TEXT_WIDTH = 128
MAX_TOKENS = 48  # the longest captions, with the person described, take 42 tokens (v1: 32)


def vae_config() -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        # v1 had (16, 32, 64) and 4 latent channels: 21 dB, accessories and textures lost (docs/world.md)
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 1,
        "latent_channels": LATENT_CHANNELS,
        "norm_num_groups": 8,
        "sample_size": IMAGE_SIZE,
    }


def unet_config(cross_attention_dim: int = TEXT_WIDTH) -> dict:
    return {
        "sample_size": LATENT_SIZE,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        # v1 had (32, 64, 128): 3.2 M parameters, blobs after 2,000 steps (docs/world.md)
        "block_out_channels": (64, 128, 256),
        "layers_per_block": 1,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": (4, 8, 16),  # diffusers' legacy name: the number of heads per block (16 channels each)
        "norm_num_groups": 8,
    }


def clip_text_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_WIDTH,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def clip_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=4,
        num_attention_heads=4,
        projection_dim=TEXT_WIDTH,
    )


def clip_config(vocab_size: int) -> CLIPConfig:
    return CLIPConfig(
        text_config=clip_text_config(vocab_size).to_dict(),
        vision_config=clip_vision_config().to_dict(),
        projection_dim=TEXT_WIDTH,
    )


def face_encoder_config() -> FaceEncoderConfig:
    return FaceEncoderConfig()


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(**vae_config())


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**unet_config())


def make_clip(vocab_size: int) -> CLIPModel:
    return CLIPModel(clip_config(vocab_size))
