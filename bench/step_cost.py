"""Per-step cost of whole pipeline runs: the plain diffusers pipeline vs Infinite-ID exact vs the fast preset.

``infinite-id bench`` times single UNet calls; this times what a user waits for: a full sampling loop (prompt and
identity encoding, the UNet calls, guidance, the scheduler steps; no VAE decode), divided by its steps. All three
pipelines are built in this process on copies of one UNet and timed round-robin
(:func:`infinite_id.evaluation.speed.round_robin`, the project's one timing method), so the printed ratios are
measured in one run under the same load. Memory is measured by ``infinite-id bench`` (one process per variant).

    python bench/step_cost.py                      # CPU, mid-size SD-1.5-shaped UNet, 32x32 latents
    python bench/step_cost.py --device cuda --dtype float16 --latent 64
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics

import numpy as np
import torch

from infinite_id.evaluation.speed import round_robin
from infinite_id.sampling import FAST_PRESET

VARIANTS = ("plain", "exact", "fast")


def build(device: str, dtype: torch.dtype):
    """The plain pipeline and an Infinite-ID pipeline with a fresh adapter, on equal copies of one UNet."""
    from infinite_id.faces.base import FaceEncoderInfo
    from infinite_id.models.projectors import IdentityProjectionConfig
    from infinite_id.pipelines import InfiniteIDStableDiffusionPipeline
    from infinite_id.testing import FACE_DIM, mid_sd15_unet, tiny_sd15_pipeline

    torch.manual_seed(0)
    plain = tiny_sd15_pipeline(unet=mid_sd15_unet())
    components = dict(plain.components, unet=copy.deepcopy(plain.unet))
    ours = InfiniteIDStableDiffusionPipeline(**components)
    config = IdentityProjectionConfig(
        cross_attention_dim=ours.unet.config.cross_attention_dim,
        face_dim=FACE_DIM,
        clip_dim=ours.image_encoder.config.hidden_size,
        clip_num_tokens=17,
    )
    ours.init_adapter(config, FaceEncoderInfo(backend="precomputed", model="bench", dim=FACE_DIM))
    for pipe in (plain, ours):
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device=device, dtype=dtype)
    return plain, ours


def calls(plain, ours, latent: int, steps: int, batch: int) -> dict[str, object]:
    from PIL import Image

    common = dict(
        num_inference_steps=steps,
        guidance_scale=5.0,
        height=latent * plain.vae_scale_factor,
        width=latent * plain.vae_scale_factor,
        num_images_per_prompt=batch,
        output_type="latent",
    )
    prompt = "a photo of a woman wearing a yellow shirt, in the living room"
    identity = dict(id_images=Image.new("RGB", (64, 64), "gray"), face_embeds=np.ones(16, "float32"), adain=True)

    def run(pipe, **extra):
        return lambda: pipe(prompt, generator=torch.Generator().manual_seed(0), **common, **extra)

    return {"plain": run(plain), "exact": run(ours, **identity), "fast": run(ours, **identity, **FAST_PRESET)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--latent", type=int, default=32, help="latent side (32: 1024 tokens at the top level)")
    parser.add_argument("--steps", type=int, default=10, help="steps per run (the fast preset's window: 1/5)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, taken in turn")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plain, ours = build(args.device, getattr(torch, args.dtype))
    runs = calls(plain, ours, args.latent, args.steps, args.batch)
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        times = round_robin(runs, args.repeats, args.device)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"config: device={args.device} dtype={args.dtype} latent={args.latent} steps={args.steps} "
        f"batch={args.batch}, median of {args.repeats} round-robin runs; fast = {dict(FAST_PRESET)}"
    )
    step = {k: statistics.median(v) / args.steps for k, v in times.items()}
    print("| variant | step (ms) | vs plain |\n|---|---|---|")
    for name in VARIANTS:
        print(f"| {name} | {1000 * step[name]:.1f} | {step[name] / step['plain']:.2f}x |")


if __name__ == "__main__":
    main()
