"""Train the miniature world's base text-to-image UNet and assemble the base model in diffusers layout.

    python -m infinite_id.world.train_unet --vae DIR --clip DIR --out infinite_id/world/weights/base

The VAE and the mini CLIP are trained first and stay frozen. Each step renders a batch of training photos,
encodes them to scaled latents and their captions to CLIP hidden states (10% of captions dropped to "" for
classifier-free guidance), and trains the UNet to predict the noise (DDPM, scaled-linear betas, 1000 steps:
the SD 1.5 recipe). Batches are a pure function of ``(seed, step)`` (resumable).

The output folder is a ``StableDiffusionPipeline`` (vae, text_encoder, tokenizer, unet, DDIM scheduler,
image_encoder + feature_extractor from the mini CLIP), loadable by the project's pipelines like any SD 1.5
model. Evaluation: the denoising loss on held-out identities at fixed timesteps and noise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from . import configs
from .attributes import images_to_tensor
from .dataset import sample_example
from .factors import EVAL_IDENTITIES, TRAIN_IDENTITIES
from .train_clip import clip_image_processor, tokenize
from .train_utils import parse_training_args, train_loop

METRICS_NAME = "metrics.json"
SCHEDULER_KWARGS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


@dataclass
class UnetTrainingConfig:
    num_identities: int = 100_000
    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    caption_dropout: float = 0.1
    seed: int = 0
    eval_images: int = 128
    checkpoint_every: int = 250


class FrozenConditioning:
    """The frozen VAE and text encoder, turning renders and captions into latents and hidden states."""

    def __init__(self, vae_dir: str | Path, clip_dir: str | Path) -> None:
        self.vae = AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False)
        self.tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
        clip = CLIPModel.from_pretrained(clip_dir)
        self.text_encoder = CLIPTextModel(clip.config.text_config)
        self.text_encoder.load_state_dict(clip.text_model.state_dict())
        self.text_encoder.eval().requires_grad_(False)

    @torch.no_grad()
    def latents(self, images, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents: a posterior sample with ``generator``, the posterior mean without one."""
        posterior = self.vae.encode(images_to_tensor(images)).latent_dist
        sample = posterior.mode() if generator is None else posterior.sample(generator=generator)
        return sample * self.vae.config.scaling_factor

    @torch.no_grad()
    def context(self, captions: list[str]) -> torch.Tensor:
        return self.text_encoder(tokenize(self.tokenizer, captions)).last_hidden_state


def _noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, **SCHEDULER_KWARGS)


def training_inputs(config: UnetTrainingConfig, step: int, frozen: FrozenConditioning):
    """Noisy latents, timesteps, text context and the noise target of one step."""
    rng = np.random.default_rng([config.seed, 51, step])
    ids = rng.integers(0, min(config.num_identities, len(TRAIN_IDENTITIES)), config.batch_size).tolist()
    examples = [sample_example(i, np.random.default_rng([config.seed, 52, step, j])) for j, i in enumerate(ids)]
    drop = rng.uniform(size=config.batch_size) < config.caption_dropout
    captions = ["" if d else e.caption for d, e in zip(drop, examples, strict=True)]
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    latents = frozen.latents([e.image for e in examples], generator)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (config.batch_size,), generator=generator)
    noisy = _noise_scheduler().add_noise(latents, noise, timesteps)
    return noisy, timesteps, frozen.context(captions), noise


@torch.no_grad()
def evaluate_unet(
    unet: UNet2DConditionModel, frozen: FrozenConditioning, num_images: int = 128, seed: int = 0
) -> dict[str, float]:
    """Denoising loss on held-out identities at timesteps 100, 500 and 900 (fixed noise)."""
    unet.eval()
    examples = [
        sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 53, i])) for i in range(num_images)
    ]
    latents = frozen.latents([e.image for e in examples])
    context = frozen.context([e.caption for e in examples])
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    metrics: dict[str, float] = {}
    for t in (100, 500, 900):
        timesteps = torch.full((num_images,), t)
        noisy = _noise_scheduler().add_noise(latents, noise, timesteps)
        losses = [
            F.mse_loss(unet(noisy[s : s + 64], timesteps[s : s + 64], context[s : s + 64]).sample, noise[s : s + 64])
            for s in range(0, num_images, 64)
        ]
        metrics[f"eval_loss_t{t}"] = float(torch.stack(losses).mean())
    metrics["eval_images"] = num_images
    return metrics


def assemble_base_model(out_dir: str | Path, unet: UNet2DConditionModel, vae_dir, clip_dir) -> Path:
    """Write the miniature base model as a ``StableDiffusionPipeline`` folder."""
    frozen = FrozenConditioning(vae_dir, clip_dir)
    clip = CLIPModel.from_pretrained(clip_dir)
    image_encoder = CLIPVisionModelWithProjection(clip.config.vision_config)
    image_encoder.vision_model.load_state_dict(clip.vision_model.state_dict())
    image_encoder.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    pipe = StableDiffusionPipeline(
        vae=frozen.vae,
        text_encoder=frozen.text_encoder,
        tokenizer=frozen.tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **SCHEDULER_KWARGS),
        safety_checker=None,
        feature_extractor=clip_image_processor(),
        image_encoder=image_encoder.eval(),
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    return Path(out_dir)


def train_unet(
    out_dir: str | Path,
    vae_dir: str | Path,
    clip_dir: str | Path,
    config: UnetTrainingConfig | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train (or resume) the base UNet, then write the assembled base model and its metrics into ``out_dir``."""
    config = config or UnetTrainingConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    frozen = FrozenConditioning(vae_dir, clip_dir)
    unet = configs.make_unet()

    def step_loss(step: int) -> torch.Tensor:
        noisy, timesteps, context, noise = training_inputs(config, step, frozen)
        return F.mse_loss(unet(noisy, timesteps, context).sample, noise)

    train_loop(
        out,
        {"unet": unet},
        step_loss,
        config.steps,
        config.lr,
        weight_decay=config.weight_decay,
        checkpoint_every=config.checkpoint_every,
        desc="base UNet",
        progress=progress,
    )
    metrics = evaluate_unet(unet, frozen, config.eval_images, seed=config.seed)
    assemble_base_model(out, unet, vae_dir, clip_dir)
    (out / METRICS_NAME).write_text(json.dumps({"metrics": metrics, "training": asdict(config)}, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> None:
    args, config = parse_training_args(
        UnetTrainingConfig,
        "Train the miniature world's base UNet; write the base model.",
        argv,
        out_help="output folder (a StableDiffusionPipeline)",
        paths=(("vae", "trained mini VAE folder"), ("clip", "trained mini CLIP folder")),
    )
    print(json.dumps(train_unet(args.out, args.vae, args.clip, config), indent=2))


if __name__ == "__main__":
    main()
