"""Per-step cost of Infinite-ID over the plain diffusers pipeline, measured in one run on the same UNet.

The method runs two streams (text + identity) with guidance in one batched UNet call of 4 rows, against the
plain pipeline's 2 rows, so about 2x is expected; mixed attention adds the doubled key/value length in the
identity rows' self-attention. Prints per-step time and peak memory for each and their ratios.

    python bench/step_cost.py                      # CPU, mid-size SD-1.5-shaped UNet, 32x32 latents
    python bench/step_cost.py --device cuda --dtype float16 --latent 64

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU each variant runs in its own process and the
growth of its peak resident set during generation is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

VARIANTS = ("plain", "infinite-id")


def _build(variant: str, device: str, dtype: torch.dtype):
    from infinite_id.faces.base import FaceEncoderInfo
    from infinite_id.models.projectors import IdentityProjectionConfig
    from infinite_id.pipelines import InfiniteIDStableDiffusionPipeline
    from infinite_id.testing import FACE_DIM, mid_sd15_unet, tiny_sd15_pipeline

    base = tiny_sd15_pipeline(unet=mid_sd15_unet())
    if variant == "plain":
        pipe = base
    else:
        pipe = InfiniteIDStableDiffusionPipeline(**base.components)
        config = IdentityProjectionConfig(
            cross_attention_dim=pipe.unet.config.cross_attention_dim,
            face_dim=FACE_DIM,
            clip_dim=pipe.image_encoder.config.hidden_size,
            clip_num_tokens=17,
        )
        pipe.init_adapter(config, FaceEncoderInfo(backend="precomputed", model="bench", dim=FACE_DIM))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device=device, dtype=dtype)
    return pipe


def _generate(pipe, variant: str, latent: int, steps: int, batch: int) -> list[float]:
    from PIL import Image

    stamps: list[float] = []

    def on_step(p, i, t, kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return {}

    kwargs = dict(
        num_inference_steps=steps,
        guidance_scale=5.0,
        height=latent * pipe.vae_scale_factor,
        width=latent * pipe.vae_scale_factor,
        num_images_per_prompt=batch,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=on_step,
    )
    if variant != "plain":
        kwargs.update(id_images=Image.new("RGB", (64, 64), "gray"), face_embeds=np.ones(16, "float32"), adain=True)
    start = time.perf_counter()
    pipe("a photo of a woman wearing a yellow shirt, in the living room", **kwargs)
    times = np.diff([start, *stamps]).tolist()
    return times[1:]  # the first step carries one-off costs (prompt/ID encoding, allocator warm-up)


def worker(variant: str, device: str, dtype: str, latent: int, steps: int, batch: int) -> dict:
    torch_dtype = getattr(torch, dtype)
    pipe = _build(variant, device, torch_dtype)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step_times = _generate(pipe, variant, latent, steps, batch)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    step_times += _generate(pipe, variant, latent, steps, batch)
    return {"variant": variant, "step_s": statistics.median(step_times), "peak_bytes": max(peak, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--latent", type=int, default=32, help="latent side (32: 1024 tokens at the top attention level)"
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.dtype, args.latent, args.steps, args.batch)))
        return

    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--worker", variant, *sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    plain, ours = results["plain"], results["infinite-id"]
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"config: device={args.device} dtype={args.dtype} latent={args.latent} steps={args.steps} batch={args.batch}"
    )
    for name, r in results.items():
        print(f"{name:12s} step {r['step_s'] * 1000:8.1f} ms   peak +{r['peak_bytes'] / 2**20:8.1f} MiB")
    mem_ratio = ours["peak_bytes"] / plain["peak_bytes"] if plain["peak_bytes"] else float("nan")
    print(
        f"ratio (infinite-id / plain): step time {ours['step_s'] / plain['step_s']:.2f}x, peak memory {mem_ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
