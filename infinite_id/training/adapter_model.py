"""Model setup for training: the frozen base pipeline, a fresh adapter, and the module that one step runs.

The base model loads through the same code as inference (``InfiniteIDPipeline.from_pretrained``), the adapter is
created by ``pipe.init_adapter`` (``to_k_ip``/``to_v_ip`` copied from ``to_k``/``to_v``, new mappers), and the
trained adapter is written by ``pipe.save_adapter``: training and inference cannot drift apart. Everything but
the mappers and ``to_k_ip``/``to_v_ip`` is frozen; frozen weights are held in the mixed-precision dtype, the
trainable ones in float32.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..adapter import load_adapter_file, load_state_strict
from ..attention_processors import InfiniteIDAttentionState, cross_attention_processors, processor_module_list
from ..errors import load_failures, model_loading
from ..models.projectors import IdentityProjectionConfig
from .config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["AdapterTrainingModel", "TrainingComponents", "load_components", "trainable_parameters"]


class AdapterTrainingModel(nn.Module):
    """One training forward: frozen CLIP on the reference crop, trainable mappers, UNet with ID tokens.

    Holds the (frozen) UNet and image encoder so that a distributed wrapper (DDP, FSDP, DeepSpeed) sees the
    whole computation, as IP-Adapter's training script does; only the adapter's parameters require grad.
    """

    def __init__(self, unet, projection: nn.Module, image_encoder, clip_layer: int = -1) -> None:
        super().__init__()
        self.unet = unet
        self.projection = projection
        self.image_encoder = image_encoder
        self.clip_layer = clip_layer

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        ref_pixel_values: torch.Tensor,
        face_embeds: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        text_cross_attention: bool = False,
    ) -> torch.Tensor:
        with torch.no_grad():
            dtype = next(self.image_encoder.parameters()).dtype
            out = self.image_encoder(ref_pixel_values.to(dtype), output_hidden_states=True)
            clip_hidden = out.hidden_states[self.clip_layer]
        p = next(self.projection.parameters())
        tokens = self.projection(clip_hidden.to(p.dtype), face_embeds.to(p.dtype))
        state = InfiniteIDAttentionState(text_rows=0, id_tokens=tokens, text_cross_attention=text_cross_attention)
        return self.unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            added_cond_kwargs=added_cond_kwargs,
            cross_attention_kwargs={"infinite_id": state},
            return_dict=False,
        )[0]


def trainable_parameters(model: AdapterTrainingModel) -> list[nn.Parameter]:
    """The mappers and every ``to_k_ip``/``to_v_ip``, in a fixed order."""
    params = list(model.projection.parameters())
    for proc in cross_attention_processors(model.unet).values():
        params.extend(proc.parameters())
    return params


@dataclass
class TrainingComponents:
    pipe: object  # InfiniteIDPipeline (SD or SDXL subclass), holding every frozen component
    projection: nn.Module
    noise_scheduler: object
    family: str
    weight_dtype: torch.dtype
    # The frozen differentiable face encoder of the identity loss (``train.identity_loss_weight > 0``), else None.
    identity_encoder: object | None = None

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"


def _is_local(path: str) -> bool:
    return Path(path).expanduser().exists() or os.path.isabs(path) or path.startswith((".", "~"))


def _load_image_encoder(config: TrainConfig):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    m = config.model
    hub = {"revision": m.revision} if m.revision else {}
    if m.image_encoder:
        source, subfolder = m.image_encoder, m.image_encoder_subfolder
    else:
        source, subfolder = m.pretrained, m.image_encoder_subfolder or "image_encoder"
    try:
        kwargs = {"subfolder": subfolder} if subfolder else {}
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(source, **kwargs, **hub)
    except load_failures() as exc:
        raise ConfigError(
            f"cannot load the CLIP image encoder from {source}"
            + (f" (subfolder {subfolder})" if subfolder else "")
            + f": {exc}. Set model.image_encoder to a CLIP vision model folder or hub id"
        ) from exc
    candidates = []
    if m.feature_extractor:
        candidates.append((m.feature_extractor, m.feature_extractor_subfolder))
    candidates += [(m.pretrained, "feature_extractor"), (source, subfolder)]
    feature_extractor = None
    for path, sub in candidates:
        if _is_local(path) and not (Path(path).expanduser() / (sub or "") / "preprocessor_config.json").is_file():
            continue
        try:
            feature_extractor = CLIPImageProcessor.from_pretrained(path, **({"subfolder": sub} if sub else {}))
            break
        except OSError:
            continue
    if feature_extractor is None:
        size = image_encoder.config.image_size
        logger.info("no CLIPImageProcessor config found; using CLIP's standard one at %d px", size)
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)
    return image_encoder, feature_extractor


def load_components(config: TrainConfig, face_encoder, weight_dtype: torch.dtype) -> TrainingComponents:
    """Load the frozen base model and image encoder, and create (or load) the trainable adapter."""
    from diffusers import DDPMScheduler

    from ..pipelines import InfiniteIDPipeline, InfiniteIDStableDiffusionPipeline

    m = config.model
    hub = {k: v for k, v in {"revision": m.revision, "variant": m.variant}.items() if v}
    image_encoder, feature_extractor = _load_image_encoder(config)
    with model_loading(f"the base model model.pretrained={m.pretrained}"):
        pipe_cls = InfiniteIDPipeline.pipeline_class_for(m.pretrained, **hub)
    extra = (
        {"safety_checker": None, "requires_safety_checker": False}
        if (pipe_cls is InfiniteIDStableDiffusionPipeline)
        else {}
    )
    with model_loading(f"the base model model.pretrained={m.pretrained}"):
        pipe = pipe_cls.from_pretrained(
            m.pretrained,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            dtype=weight_dtype,
            **extra,
            **hub,
        )
        noise_scheduler = DDPMScheduler.from_pretrained(m.pretrained, subfolder="scheduler", **hub)
    pipe.set_progress_bar_config(disable=True)
    if config.train.prediction_type:
        noise_scheduler.register_to_config(prediction_type=config.train.prediction_type)

    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False).eval()
            if module.dtype != weight_dtype:
                module.to(dtype=weight_dtype)
    if weight_dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(dtype=torch.float32)  # SD(XL) VAEs overflow in float16

    a = config.adapter
    enc = image_encoder.config
    projection_config = IdentityProjectionConfig(
        cross_attention_dim=pipe.unet.config.cross_attention_dim,
        face_dim=face_encoder.dim,
        clip_dim=enc.hidden_size,
        clip_num_tokens=(enc.image_size // enc.patch_size) ** 2 + 1,
        face_num_tokens=a.face_num_tokens,
        face_hidden_dim=a.face_hidden_dim,
        clip_mapper=a.clip_mapper,
        resampler_queries=a.resampler_queries,
        resampler_depth=a.resampler_depth,
        resampler_heads=a.resampler_heads,
    )
    projection = pipe.init_adapter(projection_config, face_encoder, clip_layer=a.clip_layer)
    if a.init_weights:
        image_proj_sd, ip_sd, metadata = load_adapter_file(a.init_weights)
        metadata.check_unet(pipe.unet, pipe.family)
        load_state_strict(projection, image_proj_sd, "image_proj (mappers)")
        load_state_strict(processor_module_list(pipe.unet), ip_sd, "ip_adapter (image cross-attention)")
    elif not a.init_from_text:
        for proc in cross_attention_processors(pipe.unet).values():
            for layer in (proc.to_k_ip, proc.to_v_ip):
                nn.init.xavier_uniform_(layer.weight)
    projection.float().requires_grad_(True).train()
    for proc in cross_attention_processors(pipe.unet).values():
        proc.float().requires_grad_(True)
    if config.train.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.unet.train()  # checkpointing is active in train mode; the frozen UNet has no dropout in SD configs
    identity_encoder = None
    if config.train.identity_loss_weight:
        from .identity_loss import load_identity_encoder

        identity_encoder = load_identity_encoder(config.train.identity_loss_encoder, "cpu")
        if config.train.gradient_checkpointing:
            pipe.vae.enable_gradient_checkpointing()  # the identity loss decodes with gradients
    return TrainingComponents(
        pipe=pipe,
        projection=projection,
        noise_scheduler=noise_scheduler,
        family=pipe.family,
        weight_dtype=weight_dtype,
        identity_encoder=identity_encoder,
    )
