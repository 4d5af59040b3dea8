"""Infinite-ID pipelines for SDXL and SD 1.5: two denoising streams in lock-step, in one UNet call per step.

The text stream is the untouched base model with the prompt. The identity stream is the same UNet with the
prompt *and* the ID tokens; its self-attention is mixed attention over both streams' keys/values (paper
section 3.3). Both streams start from the same noise and, with classifier-free guidance, run as one batch of
``[text-uncond, text-cond, id-uncond, id-cond]``.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.utils import BaseOutput

from ..adapter import (
    ADAPTER_WEIGHTS_NAME,
    AdapterMetadata,
    ClipEncoderInfo,
    IdentityAdapter,
    unet_family,
    unfuse_lora,
)
from ..attention_processors import (
    InfiniteIDAttentionState,
    configure_blocks,
    is_installed,
    uninstall_processors,
)
from ..controls import (
    DEFAULT_ADAIN,
    DEFAULT_GUIDANCE,
    DEFAULT_ID_SCALE,
    DEFAULT_SELF_ATTENTION,
    DEFAULT_STEPS,
    DEFAULT_WINDOW,
    AdaINChoice,
    SelfAttentionMode,
    check_method,
    resolve_adain,
)
from ..faces.base import FaceEncoderInfo, IdentityCrop
from ..faces.precomputed import load_embeddings
from ..identity import IdentityFeatures, MultiImageMode, load_image_encoder
from ..models.projectors import IdentityProjection, IdentityProjectionConfig
from ..sampling import (
    TextStreamMode,
    call_progress,
    check_text_stream,
    classifier_free_guidance,
    text_stream_calls,
    window_active,
)

ImageInput = str | os.PathLike | PIL.Image.Image | np.ndarray
AdaINArg = bool | AdaINChoice

__all__ = [
    "InfiniteIDPipeline",
    "InfiniteIDPipelineOutput",
    "InfiniteIDStableDiffusionPipeline",
    "InfiniteIDStableDiffusionXLPipeline",
]


@dataclass
class InfiniteIDPipelineOutput(BaseOutput):
    """``images``: the identity stream (the result); ``text_images``: the text stream, when asked for. The safety
    checker's flags (when the base model has one) are per stream: ``nsfw_content_detected[i]`` is ``images[i]``'s."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    text_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    nsfw_content_detected: list[bool] | None = None
    text_nsfw_content_detected: list[bool] | None = None


@dataclass
class _TextConditioning:
    """Prompt embeddings for one stream, rows ``[uncond; cond]`` with guidance, plus SDXL's added conditions."""

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None


def _check_local_model_folder(name_or_path: str | os.PathLike) -> None:
    """A path that looks local must be a diffusers folder; say so instead of trying the hub."""
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists()
    if not looks_local:
        return
    if not path.is_dir():
        raise FileNotFoundError(f"base model folder {path} does not exist")
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a diffusers model folder (no model_index.json); a single-file checkpoint loads with "
            "InfiniteIDPipeline.from_single_file(path), and .save_pretrained(folder) converts it to a folder"
        )


def _drop_processor_weights(module, state_dict: dict[str, torch.Tensor], prefix: str, local_metadata) -> None:
    """State-dict hook: leave out the Infinite-ID processors' weights (``...processor.to_k_ip.weight``)."""
    for key in [k for k in state_dict if k.startswith(prefix) and ".processor." in k]:
        del state_dict[key]


def _generators(generator) -> list[torch.Generator]:
    return list(generator) if isinstance(generator, list) else [generator]


class InfiniteIDPipeline:
    """Infinite-ID behaviour shared by the SDXL and SD 1.5 pipelines (a mixin over diffusers' pipelines).

    ``InfiniteIDPipeline.from_pretrained(...)`` picks the right subclass from the base model's
    ``model_index.json``; the subclasses can also be used directly.
    """

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a base model (hub id or local diffusers folder) into the matching Infinite-ID pipeline."""
        _check_local_model_folder(pretrained_model_name_or_path)
        if cls is InfiniteIDPipeline:
            target = cls.pipeline_class_for(pretrained_model_name_or_path, **kwargs)
            return target.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @staticmethod
    def pipeline_class_for(pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> type:
        """The Infinite-ID subclass for a base model, read from its ``model_index.json``."""
        from diffusers import DiffusionPipeline

        hub_keys = ("cache_dir", "local_files_only", "revision", "token")
        config = DiffusionPipeline.load_config(
            pretrained_model_name_or_path, **{k: v for k, v in kwargs.items() if k in hub_keys}
        )
        if "text_encoder_2" in config or "XL" in config.get("_class_name", ""):
            return InfiniteIDStableDiffusionXLPipeline
        if "text_encoder" in config and "unet" in config:
            return InfiniteIDStableDiffusionPipeline
        raise ValueError(
            f"{pretrained_model_name_or_path} ({config.get('_class_name')}) is neither an SDXL nor an SD 1.x/2.x "
            "UNet pipeline; Infinite-ID needs a UNet with text cross-attention"
        )

    @classmethod
    def from_single_file(cls, pretrained_model_link_or_path: str | os.PathLike, **kwargs):
        """Load an original-layout checkpoint (``.safetensors``/``.ckpt``, as on Civitai) into the matching
        Infinite-ID pipeline; ``config=<diffusers folder or hub id>`` gives its components' configs offline."""
        if cls is InfiniteIDPipeline:
            target = cls.pipeline_class_for_single_file(pretrained_model_link_or_path, config=kwargs.get("config"))
            return target.from_single_file(pretrained_model_link_or_path, **kwargs)
        return super().from_single_file(pretrained_model_link_or_path, **kwargs)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """An Infinite-ID pipeline sharing ``pipeline``'s components (no copy), e.g. from a plain
        ``StableDiffusionXLPipeline`` already in memory."""
        if cls is InfiniteIDPipeline:
            components = getattr(pipeline, "components", {})
            if "unet" not in components or "text_encoder" not in components:
                raise ValueError(
                    f"{type(pipeline).__name__} has no UNet with a text encoder: Infinite-ID needs an SDXL or "
                    "SD 1.x/2.x pipeline"
                )
            target = (
                InfiniteIDStableDiffusionXLPipeline
                if "text_encoder_2" in components
                else InfiniteIDStableDiffusionPipeline
            )
            return target.from_pipe(pipeline, **kwargs)
        return super().from_pipe(pipeline, **kwargs)

    @staticmethod
    def pipeline_class_for_single_file(path: str | os.PathLike, config: str | os.PathLike | None = None) -> type:
        """The Infinite-ID subclass for a single-file checkpoint: from ``config`` when given, else from the
        checkpoint's keys as diffusers reads them (a ``.safetensors`` header is read without loading tensors)."""
        if config is not None:
            return InfiniteIDPipeline.pipeline_class_for(config)
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

        path = Path(path).expanduser()
        if path.suffix == ".safetensors" and path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                checkpoint = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}  # noqa: SIM118
        else:
            checkpoint = load_single_file_checkpoint(str(path))
        model_type = infer_diffusers_model_type(checkpoint)
        if model_type in ("xl_base", "playground-v2-5"):
            return InfiniteIDStableDiffusionXLPipeline
        if model_type in ("v1", "v2"):
            return InfiniteIDStableDiffusionPipeline
        raise ValueError(
            f"{path} is a {model_type!r} checkpoint to diffusers; Infinite-ID runs SDXL base and SD 1.x/2.x text-to-"
            "image checkpoints (not refiners, inpainting or other model types)"
        )

    @property
    def family(self) -> str:
        return unet_family(self.unet)

    #: The attached :class:`~infinite_id.adapter.IdentityAdapter` (``set_adapter``); the face analyzer
    #: (``set_face_analyzer``). Class-level defaults, so that diffusers' config lookup never sees them.
    _adapter: IdentityAdapter | None = None
    _face_analyzer: Any = None

    @property
    def adapter(self) -> IdentityAdapter | None:
        """The identity adapter in use: its mappers, metadata, identity encoder and checks."""
        return self._adapter

    @property
    def image_proj(self) -> torch.nn.Module | None:
        return None if self._adapter is None else self._adapter.projection

    @property
    def adapter_metadata(self) -> AdapterMetadata | None:
        return None if self._adapter is None else self._adapter.metadata

    @property
    def face_analyzer(self):
        return self._face_analyzer

    @property
    def identity_encoder(self):
        """The adapter's identity encoder (``features``, ``tokens``, ``unconditional_features``)."""
        if self._adapter is None:
            raise RuntimeError("no Infinite-ID adapter: call load_adapter(...) or init_adapter(...) first")
        return self._adapter.identity_encoder

    def to(self, *args, **kwargs):
        """``DiffusionPipeline.to``, also moving the adapter's mappers (they are not a pipeline component)."""
        result = super().to(*args, **kwargs)
        if self._adapter is not None:
            param = next(self.unet.parameters())
            self._adapter.to(device=param.device, dtype=param.dtype)
        return result

    def set_adapter(self, adapter: IdentityAdapter) -> IdentityAdapter:
        """Use ``adapter`` (any :class:`~infinite_id.adapter.IdentityAdapter` family) as the identity stream.

        It is checked against the UNet, its image encoder and the face analyzer before anything changes; then its
        image encoder becomes the pipeline's, its image cross-attention goes into the UNet's processors (replacing
        an earlier adapter's), and its mappers move to the UNet's device and dtype."""
        self._check_weights_in_place()
        adapter.check(self.unet, None if self.face_analyzer is None else self.face_analyzer.info)
        param = next(self.unet.parameters())
        if adapter.image_encoder is not None and adapter.image_encoder is not getattr(self, "image_encoder", None):
            adapter.image_encoder.requires_grad_(False).eval()
            adapter.image_encoder.to(device=param.device, dtype=param.dtype)
            self.register_modules(image_encoder=adapter.image_encoder)
        if adapter.feature_extractor is not None:
            self.register_modules(feature_extractor=adapter.feature_extractor)
        adapter.install(self.unet)
        adapter.to(device=param.device, dtype=param.dtype)
        self._adapter = adapter
        return adapter

    def _check_weights_in_place(self) -> None:
        """Adapters are installed into the UNet's layers: under sequential offload those hold no weights (they wait
        on the meta device for their hook), so the adapter must come first."""
        if next(self.unet.parameters()).device.type == "meta":
            raise RuntimeError(
                "the UNet is under enable_sequential_cpu_offload: load the adapter first, then enable the offload"
            )

    def _image_encoder_pair(self, image_encoder, feature_extractor) -> tuple[Any, Any]:
        current = (getattr(self, "image_encoder", None), getattr(self, "feature_extractor", None))
        return load_image_encoder(image_encoder, feature_extractor, current)

    def init_adapter(
        self,
        projection_config: IdentityProjectionConfig,
        face_encoder: FaceEncoderInfo,
        clip_encoder: ClipEncoderInfo | None = None,
        image_encoder=None,
        feature_extractor=None,
        clip_layer: int = -1,
    ) -> IdentityProjection:
        """Create a fresh, untrained adapter (the start of training): new mappers, ``to_k_ip``/``to_v_ip``
        copied from ``to_k``/``to_v``. Returns the projection module."""
        self._check_weights_in_place()
        image_encoder, feature_extractor = self._image_encoder_pair(image_encoder, feature_extractor)
        adapter = IdentityAdapter.fresh(
            projection_config, self.unet, face_encoder, clip_encoder, image_encoder, feature_extractor, clip_layer
        )
        return self.set_adapter(adapter).projection

    def load_adapter(
        self,
        pretrained_model_name_or_path: str | os.PathLike,
        weight_name: str = ADAPTER_WEIGHTS_NAME,
        subfolder: str | None = None,
        image_encoder=None,
        feature_extractor=None,
        **hub_kwargs: Any,
    ) -> AdapterMetadata:
        """Load an Infinite-ID adapter (a ``.safetensors`` file, a folder, or a hub repo holding one).

        ``image_encoder``: a CLIP vision model, or its folder / hub id, when the pipeline has none yet. The
        adapter's metadata is checked against the base model, the image encoder and the face analyzer before any
        weight is copied.
        """
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            path = path / (subfolder or "") / weight_name
        elif not path.is_file():
            if str(pretrained_model_name_or_path).endswith(".safetensors") or path.is_absolute():
                raise FileNotFoundError(f"no adapter file at {path}")
            from huggingface_hub import hf_hub_download

            path = Path(
                hf_hub_download(str(pretrained_model_name_or_path), weight_name, subfolder=subfolder, **hub_kwargs)
            )
        adapter = IdentityAdapter.from_file(path)
        adapter.check_unet(self.unet)  # before an image encoder is loaded for it
        adapter.image_encoder, adapter.feature_extractor = self._image_encoder_pair(image_encoder, feature_extractor)
        return self.set_adapter(adapter).metadata

    def load_lora_weights(self, *args: Any, **kwargs: Any):
        """diffusers' LoRA loading (both streams run the LoRA-adapted UNet); it needs peft, an optional extra."""
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise ImportError("LoRA loading needs peft: pip install 'infinite-id[lora]' (or pip install peft)")
        return super().load_lora_weights(*args, **kwargs)

    def load_ip_adapter(self, *args: Any, **kwargs: Any):
        """Refused: diffusers' own IP-Adapter loading would replace the Infinite-ID attention processors (and feed
        the image through ``ip_adapter_image``, which this pipeline does not read)."""
        raise TypeError(
            "pipe.load_ip_adapter is diffusers' IP-Adapter path, which would replace the Infinite-ID processors: use "
            "infinite_id.loaders.load_ip_adapter(pipe, 'ip-adapter-....bin') to run IP-Adapter face files as the "
            "identity stream"
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained``, writing the base model without the adapter: the image cross-attention
        weights live in the UNet's attention processors, but belong in the adapter file (``save_adapter``)."""
        # the public hook of recent torch; the private one of older 2.x behaves the same for an in-place edit
        register = getattr(self.unet, "register_state_dict_post_hook", None) or self.unet._register_state_dict_hook
        handle = register(_drop_processor_weights) if is_installed(self.unet) else None
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if handle is not None:
                handle.remove()

    def save_adapter(self, path: str | os.PathLike, training: dict[str, Any] | None = None) -> Path:
        """Write the adapter (mappers + image cross-attention + metadata) as safetensors; returns the file."""
        if self._adapter is None:
            raise RuntimeError("no adapter to save")
        return self._adapter.save(path, self.unet, training)

    def unload_adapter(self) -> None:
        """Remove the adapter: default processors again, projection dropped, a fused FaceID LoRA taken out."""
        unfuse_lora(self.unet)
        if is_installed(self.unet):
            uninstall_processors(self.unet)
        self._adapter = None

    def set_face_analyzer(self, analyzer) -> None:
        """Use ``analyzer`` (an ``infinite_id.faces.FaceAnalyzer``) to turn reference photos into embeddings."""
        if self._adapter is not None:
            self._adapter.check_face_encoder(analyzer.info)
        self._face_analyzer = analyzer

    def set_blocks(
        self,
        mixed_attention_blocks: Sequence[str] | None = None,
        id_blocks: Sequence[str] | None = None,
        id_block_scales: dict[str, float] | None = None,
    ) -> None:
        """Per-block selection of mixed attention and ID injection (see ``configure_blocks``)."""
        configure_blocks(self.unet, mixed_attention_blocks, id_blocks, id_block_scales)

    # ------------------------------------------------------------------ identity
    def _load_image(self, image: ImageInput) -> PIL.Image.Image:
        from ..faces.image_io import load_image

        return load_image(image)

    def _analyze(self, image: ImageInput, face_index: int | None) -> IdentityCrop:
        if self.face_analyzer is None:
            raise ValueError(
                "no face analyzer is set: call pipe.set_face_analyzer(get_face_analyzer(...)) or pass face_embeds "
                "computed by the adapter's face encoder"
            )
        return self.face_analyzer.identity(image, face_index=face_index)

    def _load_face_embeds(self, face_embeds) -> torch.Tensor:
        """Rows of face embeddings from an array, a tensor, or a ``.npy``/``.safetensors`` file."""
        if isinstance(face_embeds, (str, os.PathLike)):
            array, file_metadata, _ = load_embeddings(face_embeds)
            if {"backend", "model", "dim"} <= set(file_metadata):
                self.adapter.check_face_encoder(FaceEncoderInfo.from_dict(file_metadata))
            return torch.as_tensor(array)
        array = torch.as_tensor(np.asarray(face_embeds, dtype=np.float32))
        return array.reshape(1, -1) if array.ndim == 1 else array

    @torch.no_grad()
    def encode_identity(
        self,
        id_images: ImageInput | IdentityCrop | Sequence[ImageInput | IdentityCrop] | None = None,
        face_embeds: np.ndarray | torch.Tensor | str | os.PathLike | None = None,
        id_features: IdentityFeatures | None = None,
        face_index: int | None = None,
        multi_image: MultiImageMode = "concat",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ID tokens ``(cond, uncond)``, each ``(1, tokens, cross_attention_dim)``.

        Give reference photos (paths, PIL images or arrays; with a face analyzer set, faces are detected, aligned
        and embedded; ``face_index`` picks a face other than the largest), ``IdentityCrop`` objects from
        ``infinite_id.faces``, or photos that are already aligned face crops together with their ``face_embeds``
        (an array with one row per photo, or a ``.npy``/``.safetensors`` file), or cached ``id_features``.
        Several photos of one person are merged by ``multi_image``.
        """
        encoder = self.identity_encoder
        adapter = self._adapter
        if id_features is None:
            if id_images is None:
                raise ValueError(
                    "Infinite-ID needs the reference photo: its CLIP branch reads the face crop. Pass id_images "
                    "(with face_embeds when no face analyzer is set), id_features or id_tokens"
                )
            images = list(id_images) if isinstance(id_images, (list, tuple)) else [id_images]
            crops, embeds = [], []
            if face_embeds is not None:
                face_rows = self._load_face_embeds(face_embeds)
                if face_rows.shape[0] != len(images):
                    raise ValueError(f"{face_rows.shape[0]} face embeddings for {len(images)} reference photos")
                crops = [self._load_image(image) for image in images]
                embeds = list(face_rows)
            else:
                for image in images:
                    found = image if isinstance(image, IdentityCrop) else self._analyze(image, face_index)
                    if found.info is not None:
                        adapter.check_face_encoder(found.info)
                    crops.append(found.clip_crop)
                    embeds.append(torch.as_tensor(np.asarray(found.embedding, dtype=np.float32)))
            face = torch.stack([torch.as_tensor(e) for e in embeds])
            id_features = encoder.features(crops, face)
        adapter.to(device=self._execution_device)
        cond, uncond = adapter.encode(id_features, multi_image)
        if self._offloaded():  # like the offloaded components: on the accelerator only while it computes
            adapter.to(device="cpu")
        return cond, uncond

    def _offloaded(self) -> bool:
        """Whether diffusers' model or sequential CPU offload hooks are on the pipeline's models."""
        return any(hasattr(m, "_hf_hook") for m in self.components.values() if isinstance(m, torch.nn.Module))

    # ------------------------------------------------------------------ family hooks
    def _encode_text(
        self,
        text_args: dict[str, Any],
        sdxl_args: dict[str, Any],
        device,
        num_images_per_prompt: int,
        do_cfg: bool,
        height: int,
        width: int,
    ) -> _TextConditioning:
        raise NotImplementedError

    def _vae_needs_upcast(self) -> bool:
        """Whether to decode in float32: diffusers does it for SDXL's VAE in float16 (it overflows there); SD 1.x's
        VAE decodes in float16 (casting it back and forth would cost time and log two warnings per decode)."""
        return False

    # ------------------------------------------------------------------ sampling
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        needs_upcast = self._vae_needs_upcast()
        if needs_upcast:
            vae.to(dtype=torch.float32)
        latents = latents.to(dtype=next(vae.post_quant_conv.parameters()).dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            c = latents.shape[1]
            mean_t = torch.tensor(mean).view(1, c, 1, 1).to(latents)
            std_t = torch.tensor(std).view(1, c, 1, 1).to(latents)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if needs_upcast:
            vae.to(dtype=torch.float16)
        return image

    # ------------------------------------------------------------------ diffusers' call-time properties
    # (read by diffusers' callbacks, e.g. SDCFGCutoffCallback; the SD 1.5 base class has no denoising_end)
    @property
    def denoising_end(self) -> float | None:
        return self.__dict__.get("_denoising_end")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        id_images: ImageInput | IdentityCrop | Sequence[ImageInput | IdentityCrop] | None = None,
        face_embeds: np.ndarray | torch.Tensor | str | os.PathLike | None = None,
        id_features: IdentityFeatures | None = None,
        id_tokens: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
        face_index: int | None = None,
        multi_image: MultiImageMode = "concat",
        prompt_2: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = DEFAULT_GUIDANCE,
        guidance_rescale: float = 0.0,
        id_scale: float = DEFAULT_ID_SCALE,
        adain: AdaINArg = DEFAULT_ADAIN,
        self_attention: SelfAttentionMode = DEFAULT_SELF_ATTENTION,
        mixed_attention_window: tuple[float, float] = DEFAULT_WINDOW,
        id_window: tuple[float, float] = DEFAULT_WINDOW,
        return_text_stream: bool = False,
        text_stream: TextStreamMode = "exact",
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] | None = None,
        target_size: tuple[int, int] | None = None,
        negative_original_size: tuple[int, int] | None = None,
        negative_crops_coords_top_left: tuple[int, int] | None = None,
        negative_target_size: tuple[int, int] | None = None,
        clip_skip: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> InfiniteIDPipelineOutput | tuple:
        """Generate the reference person as the prompt describes.

        Identity input, one of: ``id_images`` (photos; with ``face_embeds`` when they are already aligned crops
        and no face analyzer is set), ``id_features`` (cached encoder outputs) or ``id_tokens`` (``cond`` or
        ``(cond, uncond)``, each ``(1, tokens, dim)``).

        Method controls (their choices, defaults and ranges are defined in :mod:`infinite_id.controls`):
        ``id_scale`` weighs the image cross-attention; ``adain`` is ``"auto"`` (AdaIN-mean when the prompt names a
        style; off with ``prompt_embeds``, which carry no text to read), ``True``/``"mean"``, ``False``/``"off"``
        or ``"full"`` (ablation); ``self_attention`` is ``"mixed"`` (the paper), ``"mutual"`` or ``"independent"``
        (ablations); the windows are ``(start, end)`` fractions of the denoising during which mixed attention / ID
        injection act, measured on the scheduler's timesteps (see :func:`infinite_id.sampling.call_progress`), so
        they mean the same on one- and two-call schedulers.
        ``return_text_stream`` also returns the text stream's images (``text_images``). ``text_stream`` is
        ``"exact"`` (default: the text stream runs every step) or ``"window"`` (fast mode: it stops once the
        mixed-attention window has closed, where it no longer reaches the identity stream, so the identity image
        is the exact mode's at half the rows per step from then on; needs ``return_text_stream=False``).

        The other arguments are diffusers' (``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``) and mean
        the same: precomputed ``prompt_embeds`` (Compel, long prompts), ``clip_skip``, ``guidance_rescale``,
        ``timesteps``/``sigmas``, ``denoising_end``, and on SDXL ``prompt_2``, pooled embeddings and the size
        conditioning. diffusers' ``ip_adapter_image`` arguments have no place here: the identity is the input
        above.
        """
        if self.image_proj is None and id_tokens is None:
            raise RuntimeError("no Infinite-ID adapter: call load_adapter(...) first")
        method = check_method(  # the method's controls, read and spelled as in infinite_id.controls
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, id_scale=id_scale, adain=adain,
            self_attention=self_attention, mixed_attention_window=mixed_attention_window, id_window=id_window,
        )  # fmt: skip
        self_attention, mixed_attention_window, id_window = (
            method["self_attention"], method["mixed_attention_window"], method["id_window"]
        )  # fmt: skip
        if id_tokens is None and id_features is None and id_images is None:
            raise ValueError(
                "Infinite-ID needs the reference photo: its CLIP branch reads the face crop. Pass id_images "
                "(with face_embeds when no face analyzer is set), id_features or id_tokens"
            )
        if denoising_end is not None and not 0.0 < denoising_end <= 1.0:
            raise ValueError(f"denoising_end must be a fraction in (0, 1], got {denoising_end}")
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
        text_stream = check_text_stream(text_stream, return_text_stream)
        if not is_installed(self.unet):
            raise RuntimeError("the UNet has no Infinite-ID processors: call load_adapter(...) first")
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("give either prompt or prompt_embeds (not both)")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("give either negative_prompt or negative_prompt_embeds (not both)")
        prompts = [] if prompt is None else [prompt] if isinstance(prompt, str) else list(prompt)
        batch_size = len(prompts) if prompt is not None else prompt_embeds.shape[0]
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * batch_size
        text_args = {
            "prompt": prompts or None,
            "negative_prompt": negative_prompt,
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": negative_prompt_embeds,
            "clip_skip": clip_skip,
            "lora_scale": (cross_attention_kwargs or {}).get("scale"),
        }
        sdxl_args = {
            "prompt_2": prompt_2,
            "negative_prompt_2": negative_prompt_2,
            "pooled_prompt_embeds": pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds,
            "original_size": original_size,
            "crops_coords_top_left": crops_coords_top_left,
            "target_size": target_size,
            "negative_original_size": negative_original_size,
            "negative_crops_coords_top_left": negative_crops_coords_top_left,
            "negative_target_size": negative_target_size,
        }
        self._check_text_arguments(text_args, sdxl_args)
        adain_mode = resolve_adain(method["adain"], prompts)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback tensor inputs {unknown} are not in {self._callback_tensor_inputs}")

        default = self.unet.config.sample_size * self.vae_scale_factor
        height, width = height or default, width or default
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")
        # diffusers' properties, read by its callbacks (a callback may change _guidance_scale mid-run)
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._denoising_end = denoising_end
        self._interrupt = False
        device = self._execution_device
        do_cfg = self.do_classifier_free_guidance
        batch = batch_size * num_images_per_prompt
        if generator is None:
            generator = torch.Generator().manual_seed(random.randrange(2**63))
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images")

        # 1. Text conditioning, shared by both streams. Encoded before the identity so that model offload's chain
        #    (text encoders -> image encoder -> UNet -> VAE) frees each model when the next one runs.
        text = self._encode_text(text_args, sdxl_args, device, num_images_per_prompt, do_cfg, height, width)

        # 2. Identity tokens, rows aligned with the identity stream: [uncond x batch, cond x batch].
        if id_tokens is None:
            cond, uncond = self.encode_identity(id_images, face_embeds, id_features, face_index, multi_image)
        elif isinstance(id_tokens, tuple):
            cond, uncond = id_tokens
        elif do_cfg:
            raise ValueError("with guidance (guidance_scale > 1), pass id_tokens as a (cond, uncond) pair")
        else:
            cond, uncond = id_tokens, None
        unet_dtype = self.unet.dtype
        cond = cond.to(device=device, dtype=unet_dtype).expand(batch, -1, -1)
        if uncond is not None:
            uncond = uncond.to(device=device, dtype=unet_dtype).expand(batch, -1, -1)

        # 3. Timesteps; one scheduler per stream so each keeps its own multistep history and step index.
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, timesteps, sigmas
        )
        if denoising_end is not None and denoising_end < 1.0:
            cutoff = round(self.scheduler.config.num_train_timesteps * (1.0 - denoising_end))
            num_inference_steps = int((timesteps >= cutoff).sum())
            timesteps = timesteps[:num_inference_steps]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        id_scheduler = copy.deepcopy(self.scheduler)
        progress = call_progress(timesteps)

        # 4. The same initial noise for both streams.
        latents = self.prepare_latents(
            batch, self.unet.config.in_channels, height, width, text.embeds.dtype, device, generator, latents
        )
        text_latents = latents.clone()
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # The text stream runs while it can still reach the identity stream (all calls, in "exact" mode) or while
        # its image is wanted; "independent" self-attention never reads it.
        text_calls = 0
        if return_text_stream:
            text_calls = len(timesteps)
        elif self_attention != "independent":
            text_calls = text_stream_calls(progress, mixed_attention_window, text_stream)
        prompt_embeds, added = text.embeds, text.added
        user_kwargs = dict(cross_attention_kwargs or {})

        self._num_timesteps = len(timesteps)
        num_warmup = max(len(timesteps) - num_inference_steps * self.scheduler.order, 0)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self._interrupt:
                    continue
                halves = 2 if do_cfg else 1
                uses_text_stream = i < text_calls
                if not uses_text_stream and text_stream == "window":
                    text_latents = None  # stopped (fast mode): from here on, one stream
                streams = 2 if uses_text_stream else 1
                if prompt_embeds.shape[0] != halves * batch:
                    raise ValueError(
                        f"prompt_embeds has {prompt_embeds.shape[0]} rows at step {i}, the step needs {halves * batch}"
                        " (with guidance: negative then positive rows); a callback changed one without the other"
                    )
                if do_cfg and uncond is None:
                    raise ValueError("guidance switched on mid-run, but id_tokens has no unconditional part")
                id_rows_tokens = torch.cat([uncond, cond]) if do_cfg else cond
                mixed_now = window_active(mixed_attention_window, progress[i])
                state = InfiniteIDAttentionState(
                    text_rows=prompt_embeds.shape[0] if uses_text_stream else 0,
                    id_tokens=id_rows_tokens,
                    id_scale=id_scale if window_active(id_window, progress[i]) else 0.0,
                    self_attention=self_attention if mixed_now else "independent",
                    adain=adain_mode,
                )
                # Each stream's input is scaled by its own scheduler: sigma-scaled schedulers (Euler, LMS, Heun,
                # KDPM2) read the sigma of their own step index, and without the text stream only id_scheduler steps.
                per_stream = [(self.scheduler, text_latents)] if uses_text_stream else []
                per_stream.append((id_scheduler, latents))
                model_input = torch.cat([s.scale_model_input(torch.cat([x] * halves), t) for s, x in per_stream])
                noise = self.unet(
                    model_input,
                    t,
                    encoder_hidden_states=prompt_embeds.repeat(streams, 1, 1),
                    added_cond_kwargs=None if added is None else {k: v.repeat(streams, 1) for k, v in added.items()},
                    cross_attention_kwargs={**user_kwargs, "infinite_id": state},
                    return_dict=False,
                )[0]
                guided = []
                for chunk in noise.chunk(streams):
                    if do_cfg:
                        uncond_pred, cond_pred = chunk.chunk(2)
                        chunk = classifier_free_guidance(
                            uncond_pred, cond_pred, self._guidance_scale, self._guidance_rescale
                        )
                    guided.append(chunk)

                # Step each stream with the same random draws (stochastic samplers stay in lock-step).
                rng_states = [g.get_state() for g in _generators(generator)]
                if uses_text_stream:
                    text_latents = self.scheduler.step(
                        guided[0], t, text_latents, **extra_step_kwargs, return_dict=False
                    )[0]
                    for g, s in zip(_generators(generator), rng_states, strict=True):
                        g.set_state(s)
                latents = id_scheduler.step(guided[-1], t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    local = self._callback_locals(latents, text_latents, prompt_embeds, added, do_cfg)
                    outputs = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}
                    )
                    latents = outputs.pop("latents", latents)
                    text_latents = outputs.pop("text_latents", text_latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    if added is not None:
                        added = {
                            "text_embeds": outputs.pop("add_text_embeds", added["text_embeds"]),
                            "time_ids": outputs.pop("add_time_ids", added["time_ids"]),
                        }
                    do_cfg = self.do_classifier_free_guidance  # SDCFGCutoffCallback sets _guidance_scale to 0
                if i == len(timesteps) - 1 or ((i + 1) > num_warmup and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        images, text_images, nsfw, text_nsfw = self._finish(
            latents, text_latents if return_text_stream else None, output_type
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, text_images)
        return InfiniteIDPipelineOutput(
            images=images,
            text_images=text_images,
            nsfw_content_detected=nsfw,
            text_nsfw_content_detected=text_nsfw,
        )

    @staticmethod
    def _callback_locals(latents, text_latents, prompt_embeds, added, do_cfg: bool) -> dict[str, torch.Tensor]:
        """The tensors a step-end callback may read, under diffusers' names (prompt rows ``[uncond; cond]``)."""
        half = prompt_embeds.shape[0] // 2 if do_cfg else 0
        local = {
            "latents": latents,
            "text_latents": text_latents,
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": prompt_embeds[:half] if do_cfg else None,
        }
        if added is not None:
            local["add_text_embeds"] = added["text_embeds"]
            local["add_time_ids"] = added["time_ids"]
            local["negative_pooled_prompt_embeds"] = added["text_embeds"][:half] if do_cfg else None
            local["negative_add_time_ids"] = added["time_ids"][:half] if do_cfg else None
        return local

    def _check_text_arguments(self, text_args: dict[str, Any], sdxl_args: dict[str, Any]) -> None:
        """Family-specific checks of the prompt arguments, before any model runs."""
        raise NotImplementedError

    def _finish(self, latents, text_latents, output_type: str):
        """Decode the streams one VAE call each (the VAE's activations, in float32 on SDXL, are the largest tensors
        of a run: one batch of both streams would double them); the safety checker's flags are split per stream."""
        if output_type == "latent":
            return latents, text_latents, None, None
        decoded = self._decode(latents)
        if text_latents is not None:
            decoded = torch.cat([decoded, self._decode(text_latents)])
        nsfw = None
        if getattr(self, "safety_checker", None) is not None:
            decoded, nsfw = self.run_safety_checker(decoded, self._execution_device, latents.dtype)
        if getattr(self, "watermark", None) is not None:
            decoded = self.watermark.apply_watermark(decoded)
        pictures = self.image_processor.postprocess(decoded, output_type=output_type)
        n = latents.shape[0]
        text_pictures = pictures[n:] if text_latents is not None else None
        text_nsfw = None if nsfw is None or text_latents is None else list(nsfw[n:])
        return pictures[:n], text_pictures, (None if nsfw is None else list(nsfw[:n])), text_nsfw


class InfiniteIDStableDiffusionXLPipeline(InfiniteIDPipeline, StableDiffusionXLPipeline):
    """Infinite-ID on Stable Diffusion XL (the paper's base model)."""

    _callback_tensor_inputs = [
        *StableDiffusionXLPipeline._callback_tensor_inputs,
        "text_latents",
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
        "negative_add_time_ids",
    ]

    def _vae_needs_upcast(self) -> bool:
        return self.vae.dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", False))

    def _check_text_arguments(self, text_args, sdxl_args):
        if text_args["prompt_embeds"] is not None and sdxl_args["pooled_prompt_embeds"] is None:
            raise ValueError("with prompt_embeds, pass pooled_prompt_embeds too (encode_prompt returns both)")
        if text_args["negative_prompt_embeds"] is not None and sdxl_args["negative_pooled_prompt_embeds"] is None:
            raise ValueError(
                "with negative_prompt_embeds, pass negative_pooled_prompt_embeds too (encode_prompt returns both)"
            )

    def _encode_text(self, text_args, sdxl_args, device, num_images_per_prompt, do_cfg, height, width):
        embeds, neg_embeds, pooled, neg_pooled = self.encode_prompt(
            prompt=text_args["prompt"],
            prompt_2=sdxl_args["prompt_2"],
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=do_cfg,
            negative_prompt=text_args["negative_prompt"],
            negative_prompt_2=sdxl_args["negative_prompt_2"],
            prompt_embeds=text_args["prompt_embeds"],
            negative_prompt_embeds=text_args["negative_prompt_embeds"],
            pooled_prompt_embeds=sdxl_args["pooled_prompt_embeds"],
            negative_pooled_prompt_embeds=sdxl_args["negative_pooled_prompt_embeds"],
            lora_scale=text_args["lora_scale"],
            clip_skip=text_args["clip_skip"],
        )
        projection_dim = (
            int(pooled.shape[-1]) if self.text_encoder_2 is None else self.text_encoder_2.config.projection_dim
        )

        def time_ids(original, crop, target) -> torch.Tensor:
            ids = self._get_add_time_ids(
                tuple(original or (height, width)),
                tuple(crop or (0, 0)),
                tuple(target or (height, width)),
                dtype=embeds.dtype,
                text_encoder_projection_dim=projection_dim,
            )
            return ids.to(device).repeat(embeds.shape[0], 1)

        pos_ids = time_ids(sdxl_args["original_size"], sdxl_args["crops_coords_top_left"], sdxl_args["target_size"])
        neg_ids = pos_ids
        if sdxl_args["negative_original_size"] is not None and sdxl_args["negative_target_size"] is not None:
            neg_ids = time_ids(
                sdxl_args["negative_original_size"],
                sdxl_args["negative_crops_coords_top_left"],
                sdxl_args["negative_target_size"],
            )
        if do_cfg:
            embeds = torch.cat([neg_embeds, embeds])
            pooled = torch.cat([neg_pooled, pooled])
            pos_ids = torch.cat([neg_ids, pos_ids])
        return _TextConditioning(embeds.to(device), {"text_embeds": pooled.to(device), "time_ids": pos_ids})


class InfiniteIDStableDiffusionPipeline(InfiniteIDPipeline, StableDiffusionPipeline):
    """Infinite-ID on Stable Diffusion 1.x / 2.x."""

    _callback_tensor_inputs = [*StableDiffusionPipeline._callback_tensor_inputs, "text_latents"]

    def _check_text_arguments(self, text_args, sdxl_args):
        given = [name for name, value in sdxl_args.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: SDXL-only argument(s), but this is an SD 1.x/2.x pipeline; leave them out"
            )

    def _encode_text(self, text_args, sdxl_args, device, num_images_per_prompt, do_cfg, height, width):
        prompt, prompt_embeds, clip_skip = text_args["prompt"], text_args["prompt_embeds"], text_args["clip_skip"]
        if clip_skip is not None and prompt_embeds is None and not hasattr(self.text_encoder, "text_model"):
            prompt_embeds, prompt, clip_skip = self._clip_skipped_embeds(prompt, clip_skip, device), None, None
        embeds, neg_embeds = self.encode_prompt(
            prompt,
            device,
            num_images_per_prompt,
            do_cfg,
            negative_prompt=text_args["negative_prompt"],
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=text_args["negative_prompt_embeds"],
            lora_scale=text_args["lora_scale"],
            clip_skip=clip_skip,
        )
        if do_cfg:
            embeds = torch.cat([neg_embeds, embeds])
        return _TextConditioning(embeds.to(device), None)

    def _clip_skipped_embeds(self, prompts: list[str], clip_skip: int, device) -> torch.Tensor:
        """The prompt's hidden state ``clip_skip`` layers before the last, through the final layer norm (diffusers'
        meaning of ``clip_skip``). diffusers' own SD 1.5 code reaches the norm as ``text_encoder.text_model``,
        which transformers 5 removed; the computation is the same."""
        if isinstance(self, TextualInversionLoaderMixin):
            prompts = self.maybe_convert_prompt(prompts, self.tokenizer)
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )  # fmt: skip
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(device) if use_mask else None
        out = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[-(clip_skip + 1)]
        return self.text_encoder.final_layer_norm(hidden).to(dtype=self.text_encoder.dtype)
