"""Train the miniature world's base text-to-image model (UNet + text encoder) and assemble it in diffusers layout.

    python -m infinite_id.world.trainers.train_unet --weights DIR --out DIR/base

Inputs are the stages trained before it in ``--weights``: the VAE (``vae/``), the mini CLIP (``clip/``, whose
text tower initialises the text encoder), the latent cache (``latent_cache/``), and the attribute classifier and
face detector that judge the samples. The recipe (each part replaces what the v1 base model lacked; see
docs/world.md):

- a latent cache: every photo rendered and encoded once (:mod:`infinite_id.world.trainers.latent_cache`);
- v-prediction on a schedule rescaled to zero terminal SNR (the last training step is pure noise, so sampling
  starts where training does; DDIM samples with "trailing" timesteps);
- min-SNR loss weighting for v-prediction: the v-loss times ``min(1, gamma / (snr + 1))``, which is the x0-loss
  times ``min(snr + 1, gamma)`` (plain min-SNR would give the pure-noise end, where layout is decided, zero weight);
- the text encoder trained with the UNet's own loss (at ``text_lr``), so every word of the caption reaches the
  UNet; CLIP-T stays the frozen mini CLIP's score;
- EMA weights of both, which are what is sampled, judged and shipped;
- a stop on sample quality: every ``eval_every`` steps the EMA model draws ``eval_captions`` held-out captions
  (DDIM, ``eval_steps`` steps, guidance 5) and the attribute classifier and face detector score them; training
  stops when the score has not improved by ``min_improvement`` for ``patience`` evaluations (or at ``steps``), and
  the best evaluation's weights are kept. The history is ``sample_quality.jsonl``, so a resumed run knows it.

Batches are a pure function of ``(seed, step)``, so a run resumes exactly from its checkpoint.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..models import configs
from ..models.attributes import ATTRIBUTE_VALUES, AttributeClassifier, images_to_tensor
from ..models.landmarks import LandmarkDetector
from ..scene.captions import parse_prompt
from ..scene.dataset import sample_example
from ..scene.factors import EVAL_IDENTITIES
from .latent_cache import LatentCache, load_latent_cache
from .train_clip import clip_image_processor, text_tower, tokenize
from .train_utils import (
    BEST_NAME,
    remove_working_files,
    stage_folder,
    train_loop,
    training_command,
    working_file,
    write_stage_metrics,
)

HISTORY_NAME = "sample_quality.jsonl"
SCHEDULER_KWARGS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


@dataclass
class UnetTrainingConfig:
    steps: int = 16_000  # at most: training usually stops earlier on the sample-quality plateau
    batch_size: int = 64
    lr: float = 5e-4
    text_lr: float = 5e-5  # the text encoder, fine-tuned by the UNet's loss
    weight_decay: float = 1e-2
    caption_dropout: float = 0.1
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True
    min_snr_gamma: float = 5.0  # 0: no weighting
    face_loss_weight: float = 0.0  # extra loss weight on latent cells covered by the face
    ema_decay: float = 0.999
    eval_every: int = 1000
    eval_captions: int = 64
    eval_steps: int = 20
    patience: int = 3
    min_improvement: float = 0.005
    seed: int = 0
    eval_images: int = 128
    checkpoint_every: int = 250


def scheduler_kwargs(config: UnetTrainingConfig) -> dict:
    return {
        **SCHEDULER_KWARGS,
        "prediction_type": config.prediction_type,
        "rescale_betas_zero_snr": config.zero_terminal_snr,
    }


def noise_scheduler(config: UnetTrainingConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, **scheduler_kwargs(config))


def sampling_scheduler(config: UnetTrainingConfig) -> DDIMScheduler:
    """DDIM for the trained schedule: "trailing" spacing starts sampling at the last (pure-noise) timestep."""
    spacing = "trailing" if config.zero_terminal_snr else "leading"
    return DDIMScheduler(
        clip_sample=False, set_alpha_to_one=False, timestep_spacing=spacing, steps_offset=1, **scheduler_kwargs(config)
    )


def loss_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, config: UnetTrainingConfig) -> torch.Tensor:
    """Per-sample weights of the prediction loss (min-SNR, see the module docstring)."""
    if not config.min_snr_gamma:
        return torch.ones(len(timesteps))
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas).clamp_min(1e-8)
    if config.prediction_type == "v_prediction":
        return (config.min_snr_gamma / (snr + 1)).clamp(max=1.0)
    return (config.min_snr_gamma / snr.clamp_min(1e-8)).clamp(max=1.0)  # epsilon: min(snr, gamma) / snr


def prediction_target(scheduler: DDPMScheduler, latents, noise, timesteps, config: UnetTrainingConfig) -> torch.Tensor:
    """What the UNet predicts: the velocity (v-prediction) or the noise."""
    if config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


@dataclass
class TrainingInputs:
    noisy: torch.Tensor
    timesteps: torch.Tensor
    input_ids: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor  # (B,) per-sample loss weights
    face: torch.Tensor  # (B, 1, h, w) face coverage of each latent cell


def training_inputs(
    config: UnetTrainingConfig, step: int, cache: LatentCache, tokenizer: CLIPTokenizer
) -> TrainingInputs:
    """One step's batch drawn from the cache, noised, with its captions (some dropped) and target."""
    rng = np.random.default_rng([config.seed, 51, step])
    index = torch.from_numpy(rng.integers(0, len(cache), config.batch_size))
    drop = rng.uniform(size=config.batch_size) < config.caption_dropout
    captions = ["" if d else cache.records[int(i)]["caption"] for d, i in zip(drop, index, strict=True)]
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    latents = cache.latents[index].float()
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (config.batch_size,), generator=generator)
    scheduler = noise_scheduler(config)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(scheduler, latents, noise, timesteps, config)
    return TrainingInputs(
        noisy=noisy,
        timesteps=timesteps,
        input_ids=tokenize(tokenizer, captions),
        target=target,
        weights=loss_weights(scheduler, timesteps, config),
        face=cache.face[index].unsqueeze(1),
    )


def prediction_loss(unet: nn.Module, text_encoder: nn.Module, inputs: TrainingInputs, config) -> torch.Tensor:
    context = text_encoder(inputs.input_ids).last_hidden_state
    error = (unet(inputs.noisy, inputs.timesteps, context).sample - inputs.target).pow(2)
    cell_weight = 1 + config.face_loss_weight * inputs.face
    per_sample = (error * cell_weight).mean(dim=(1, 2, 3)) / cell_weight.mean(dim=(1, 2, 3))
    return (per_sample * inputs.weights).mean()


class Ema(nn.Module):
    """Exponential moving averages of some modules' parameters (buffers are copied), as a module so that the
    training checkpoint carries them. The decay warms up as ``min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.averaged = nn.ModuleDict({k: copy.deepcopy(m).requires_grad_(False).eval() for k, m in modules.items()})
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for name, module in modules.items():
            for avg, p in zip(self.averaged[name].parameters(), module.parameters(), strict=True):
                avg.lerp_(p.detach(), 1 - decay)
            for avg, b in zip(self.averaged[name].buffers(), module.buffers(), strict=True):
                avg.copy_(b)
        self.updates += 1


def held_out_captions(count: int, seed: int = 0) -> list[str]:
    """Captions of held-out photos: what the base model is asked to draw when it is judged."""
    return [
        sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 57, i])).caption for i in range(count)
    ]


def sample_pipeline(vae, text_encoder, tokenizer, unet, config: UnetTrainingConfig) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sampling_scheduler(config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@torch.no_grad()
def sample_quality(
    pipe: StableDiffusionPipeline,
    classifier: AttributeClassifier,
    detector: LandmarkDetector,
    captions: list[str],
    steps: int,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """Attribute accuracy of the images drawn for ``captions`` (every attribute each caption names, gender
    included; its mean is ``score``) and the face detection rate (P(face) >= 0.5)."""
    images = []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start : start + batch_size]
        generator = torch.Generator().manual_seed(seed + start)
        images += pipe(
            chunk, num_inference_steps=steps, guidance_scale=5.0, height=64, width=64, generator=generator
        ).images
    predicted = classifier.predict(images)
    hits: dict[str, list[float]] = {name: [] for name in ATTRIBUTE_VALUES}
    for p, text in zip(predicted, captions, strict=True):
        for name, value in parse_prompt(text).named().items():
            if name in hits:
                hits[name].append(float(p[name] == value))
    every = [h for values in hits.values() for h in values]
    faces = [d.face_probability >= 0.5 for d in detector.detect(images)]
    out = {f"attr_{k}": float(np.mean(v)) for k, v in hits.items() if v}
    out.update(score=float(np.mean(every)), face_detection=float(np.mean(faces)), images=len(images))
    return out


@torch.no_grad()
def evaluate_denoising(unet, text_encoder, tokenizer, vae, config: UnetTrainingConfig, num_images: int) -> dict:
    """Prediction loss (unweighted) on held-out photos at timesteps 100, 500 and 900 (fixed noise)."""
    examples = [
        sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([config.seed, 53, i]))
        for i in range(num_images)
    ]
    latents = vae.encode(images_to_tensor([e.image for e in examples])).latent_dist.mode() * vae.config.scaling_factor
    context = text_encoder(tokenize(tokenizer, [e.caption for e in examples])).last_hidden_state
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(config.seed))
    scheduler = noise_scheduler(config)
    metrics: dict[str, float] = {}
    for t in (100, 500, 900):
        timesteps = torch.full((num_images,), t)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = prediction_target(scheduler, latents, noise, timesteps, config)
        prediction = torch.cat(
            [
                unet(noisy[s : s + 64], timesteps[s : s + 64], context[s : s + 64]).sample
                for s in range(0, num_images, 64)
            ]
        )
        metrics[f"eval_loss_t{t}"] = float((prediction - target).pow(2).mean())
    metrics["eval_images"] = num_images
    return metrics


def assemble_base_model(out_dir, unet, text_encoder, tokenizer, vae, clip_dir, config: UnetTrainingConfig) -> Path:
    """Write the miniature base model as a ``StableDiffusionPipeline`` folder (with the mini CLIP's image tower
    as ``image_encoder``, which the identity encoder's CLIP branch reads)."""
    clip = CLIPModel.from_pretrained(clip_dir)
    image_encoder = CLIPVisionModelWithProjection(clip.config.vision_config)
    image_encoder.vision_model.load_state_dict(clip.vision_model.state_dict())
    image_encoder.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    pipe = sample_pipeline(vae, text_encoder, tokenizer, unet, config)
    pipe.register_modules(feature_extractor=clip_image_processor(), image_encoder=image_encoder.eval())
    pipe.save_pretrained(out_dir)
    return Path(out_dir)


class _Judge:
    """Sample-quality evaluations of the EMA model with early stopping; the history survives a resume."""

    def __init__(self, out: Path, config: UnetTrainingConfig, ema: Ema, vae, tokenizer, weights: Path) -> None:
        self.out, self.config, self.ema = out, config, ema
        self.pipe = sample_pipeline(vae, ema.averaged["text"], tokenizer, ema.averaged["unet"], config)
        self.pipe.set_progress_bar_config(disable=True)
        self.classifier = AttributeClassifier.from_pretrained(weights / "attributes")
        self.detector = LandmarkDetector.from_pretrained(weights / "landmarks")
        self.captions = held_out_captions(config.eval_captions, config.seed)
        history = out / HISTORY_NAME
        self.history = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []

    @property
    def best(self) -> dict | None:
        return max(self.history, key=lambda h: h["score"], default=None)

    def __call__(self, step: int) -> bool:
        """After ``step`` steps: evaluate if due; return True to stop."""
        if step % self.config.eval_every == 0:
            self.evaluate(step)
        return self._plateaued()

    def evaluate(self, step: int) -> None:
        """Judge the EMA model after ``step`` steps (once), keeping its weights if it is the best so far."""
        if any(h["step"] == step for h in self.history):
            return
        previous = self.best
        result = {
            "step": step,
            **sample_quality(
                self.pipe, self.classifier, self.detector, self.captions, self.config.eval_steps, self.config.seed
            ),
        }
        if previous is None or result["score"] > previous["score"]:
            state = {
                f"{k}.{n}": v.contiguous() for k, m in self.ema.averaged.items() for n, v in m.state_dict().items()
            }
            save_file(state, str(self.out / BEST_NAME), metadata={"step": str(step)})
        self.history.append(result)
        with (self.out / HISTORY_NAME).open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)

    def _plateaued(self) -> bool:
        best = self.best
        if best is None:
            return False
        later = [h for h in self.history if h["step"] > best["step"]]
        return len(later) >= self.config.patience and all(
            h["score"] < best["score"] + self.config.min_improvement for h in later
        )

    def load_best(self) -> None:
        """Load the best evaluation's EMA weights (the working file, else its committed snapshot)."""
        source = working_file(self.out, BEST_NAME)
        if source is None:
            if self.best is not None:
                warnings.warn(
                    f"the best evaluation's weights (step {self.best['step']}) are lost; keeping the last ones",
                    stacklevel=2,
                )
            return
        state = load_file(str(source))
        for name, module in self.ema.averaged.items():
            prefix = name + "."
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def train_unet(
    out_dir: str | Path, weights_dir: str | Path, config: UnetTrainingConfig | None = None, progress: bool = True
) -> dict[str, float]:
    """Train (or resume) the base model on the stages in ``weights_dir``; write it and its metrics to ``out_dir``."""
    config = config or UnetTrainingConfig()
    out, weights = stage_folder(out_dir, config.seed), Path(weights_dir)
    cache = load_latent_cache(weights / "latent_cache")
    vae = AutoencoderKL.from_pretrained(weights / "vae").eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(weights / "clip")
    text_encoder = text_tower(CLIPModel.from_pretrained(weights / "clip")).train()
    unet = configs.make_unet()
    trained = {"unet": unet, "text": text_encoder}
    ema = Ema(trained, config.ema_decay)
    judge = _Judge(out, config, ema, vae, tokenizer, weights)

    def decayed(module: nn.Module) -> tuple[list, list]:
        named = list(module.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
        return decay, [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]

    groups = []
    for module, lr in ((unet, config.lr), (text_encoder, config.text_lr)):
        decay, rest = decayed(module)
        groups += [
            {"params": decay, "weight_decay": config.weight_decay, "lr_scale": lr / config.lr},
            {"params": rest, "weight_decay": 0.0, "lr_scale": lr / config.lr},
        ]

    done = train_loop(
        out,
        {**trained, "ema": ema},
        lambda step: prediction_loss(unet, text_encoder, training_inputs(config, step, cache, tokenizer), config),
        config.steps,
        config.lr,
        param_groups=groups,
        checkpoint_every=config.checkpoint_every,
        after_step=lambda: ema.update(trained),
        stop_after=judge,
        desc="base model",
        progress=progress,
    )
    judge.evaluate(done)  # the end is judged too (a no-op when it already was)
    judge.load_best()
    final_unet, final_text = ema.averaged["unet"], ema.averaged["text"]
    metrics = {
        **evaluate_denoising(final_unet, final_text, tokenizer, vae, config, config.eval_images),
        **{f"sample_{k}": v for k, v in judge.best.items()},
        "evaluations": len(judge.history),
    }
    assemble_base_model(out, final_unet, final_text, tokenizer, vae, weights / "clip", config)
    remove_working_files(out, (BEST_NAME,))
    return write_stage_metrics(out, metrics, config)


def main(argv: list[str] | None = None) -> None:
    training_command(
        lambda args, config: train_unet(args.out, args.weights, config),
        UnetTrainingConfig,
        "Train the miniature world's base model (UNet + text encoder); write it as a StableDiffusionPipeline.",
        argv,
        out_help="output folder (a StableDiffusionPipeline)",
        paths=(("weights", "the world weights folder with the vae, clip, latent_cache, attributes, landmarks"),),
    )


if __name__ == "__main__":
    main()
