"""UNet shapes by name, for random-weight UNets built in-process (no download): the real SDXL shape for speed and
memory measurements, and small SD-1.5- and SDXL-like shapes for CPU benchmarks and tests.

One definition of each, read by :mod:`infinite_id.evaluation.speed` (``infinite-id bench``), ``bench/`` and
:mod:`infinite_id.testing`; production code reads them here, never through the test helpers.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["UNET_CONFIGS", "build_unet", "unet_config"]

_SD15_BLOCKS = {
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "attention_head_dim": 8,
    "layers_per_block": 2,
    "sample_size": 32,
}

UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # The real SDXL base UNet (2.6B parameters; random weights): what GPU speed, memory and training numbers use.
    "sdxl": {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "norm_num_groups": 32,
    },
    # An SD-1.5-shaped UNet small enough for a CPU speed measurement (`infinite-id bench`).
    "mid": {**_SD15_BLOCKS, "block_out_channels": (64, 128, 256), "cross_attention_dim": 256},
    # A larger SD-1.5 shape (49M parameters, attention at two of its three resolutions): bench/step_cost.py.
    "mid-sd15": {**_SD15_BLOCKS, "block_out_channels": (128, 256, 384), "cross_attention_dim": 32},
    # The smallest UNet with cross-attention, for tests of the speed module.
    "tiny": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "sample_size": 8,
    },
    # The tiny SD 1.5 and SDXL UNets of the test models and the smoke model (infinite_id.testing).
    "tiny-sd15": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "sample_size": 32,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
    },
    "tiny-sdxl": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "sample_size": 32,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": (1, 2),
        "projection_class_embeddings_input_dim": 80,  # 6 time ids x 8 + pooled text 32
        "cross_attention_dim": 64,
        "norm_num_groups": 1,
    },
}


def unet_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` keyword arguments of shape ``name`` (a copy), with ``overrides``."""
    if name not in UNET_CONFIGS:
        raise ValueError(f"unknown UNet shape {name!r}; choose from {', '.join(UNET_CONFIGS)}")
    return {**copy.deepcopy(UNET_CONFIGS[name]), **overrides}


def build_unet(name: str, seed: int = 0, **overrides: Any):
    """A ``UNet2DConditionModel`` of shape ``name`` with random weights drawn from ``seed``."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**unet_config(name, **overrides))
