"""Train the miniature world's VAE (diffusers ``AutoencoderKL``, 64x64 RGB <-> 4x16x16) on renders.

    python -m infinite_id.world.train_vae --out infinite_id/world/weights/vae --steps 2000

Loss: L1 + MSE reconstruction of the posterior mean's decoding on a sample, plus a small KL term (as the
Stable Diffusion VAE uses). At the end the latent ``scaling_factor`` is set to 1 / std of held-out latents, so
the UNet sees unit-variance latents, exactly as SD's 0.18215 does for its VAE. Evaluation: PSNR on held-out
identities. Batches are a pure function of ``(seed, step)`` (resumable).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from . import configs
from .attributes import images_to_tensor
from .dataset import sample_example
from .factors import EVAL_IDENTITIES, TRAIN_IDENTITIES
from .train_utils import parse_training_args, train_loop

METRICS_NAME = "metrics.json"


@dataclass
class VaeTrainingConfig:
    num_identities: int = 100_000
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 0
    eval_images: int = 200
    checkpoint_every: int = 250


def training_batch(config: VaeTrainingConfig, step: int) -> torch.Tensor:
    rng = np.random.default_rng([config.seed, 41, step])
    ids = rng.integers(0, min(config.num_identities, len(TRAIN_IDENTITIES)), config.batch_size).tolist()
    images = [sample_example(i, np.random.default_rng([config.seed, 42, step, j])).image for j, i in enumerate(ids)]
    return images_to_tensor(images)


def vae_loss(vae: AutoencoderKL, pixels: torch.Tensor, kl_weight: float) -> torch.Tensor:
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    error = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels)
    return error + kl_weight * posterior.kl().mean()


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, num_images: int = 200, seed: int = 0) -> dict[str, float]:
    """PSNR (images in [0, 1]) and latent statistics on held-out identities."""
    vae.eval()
    images = [
        sample_example(EVAL_IDENTITIES.start + i, np.random.default_rng([seed, 43, i])).image
        for i in range(num_images)
    ]
    psnr, latents = [], []
    for start in range(0, num_images, 50):
        pixels = images_to_tensor(images[start : start + 50])
        mean = vae.encode(pixels).latent_dist.mode()
        latents.append(mean)
        decoded = vae.decode(mean).sample.clamp(-1, 1)
        mse = ((decoded - pixels) / 2).pow(2).mean(dim=(1, 2, 3))
        psnr += (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).tolist()
    latents = torch.cat(latents)
    return {
        "psnr_db": float(np.mean(psnr)),
        "latent_mean": latents.mean().item(),
        "latent_std": latents.std().item(),
        "eval_images": num_images,
    }


def train_vae(out_dir: str | Path, config: VaeTrainingConfig | None = None, progress: bool = True) -> dict[str, float]:
    """Train (or resume) the mini VAE into ``out_dir`` (diffusers layout); return and save held-out metrics."""
    config = config or VaeTrainingConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    vae = configs.make_vae()
    train_loop(
        out,
        {"vae": vae},
        lambda step: vae_loss(vae, training_batch(config, step), config.kl_weight),
        config.steps,
        config.lr,
        checkpoint_every=config.checkpoint_every,
        desc="VAE",
        progress=progress,
    )
    metrics = evaluate_vae(vae, config.eval_images, seed=config.seed)
    vae.register_to_config(scaling_factor=round(1.0 / max(metrics["latent_std"], 1e-6), 5))
    metrics["scaling_factor"] = vae.config.scaling_factor
    vae.save_pretrained(out)
    (out / METRICS_NAME).write_text(json.dumps({"metrics": metrics, "training": asdict(config)}, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> None:
    args, config = parse_training_args(
        VaeTrainingConfig,
        "Train the miniature world's VAE.",
        argv,
        out_help="output folder (diffusers AutoencoderKL layout)",
    )
    print(json.dumps(train_vae(args.out, config), indent=2))


if __name__ == "__main__":
    main()
