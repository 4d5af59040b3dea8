"""Training speed and peak memory.

CPU (any machine; what CI-class machines can measure): the real trainer (``infinite_id.training.train``) on the
tiny SD 1.5 model and a generated 12-photo dataset, with and without gradient checkpointing. Absolute numbers
on a CPU say little; the ratio between the two settings, measured in one run, is what to read.

GPU (``--gpu``): an SDXL-size UNet (the real SDXL config, random weights, 2.6B parameters) with Infinite-ID
processors and a ViT-H-size projection, trained at 1024 px (128x128 latents) in bf16, with and without gradient
checkpointing: the UNet + adapter forward/backward/AdamW step that dominates real training. The VAE encode and
CLIP image encoder (frozen, run once per sample) are not included; the inputs are random latents and CLIP
features of the real shapes.

    python bench/train_speed.py                 # CPU, tiny model
    python bench/train_speed.py --gpu --batch 2 # GPU, SDXL size
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "training"))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_run(root: str, checkpointing: bool, steps: int, batch: int, threads: int) -> tuple[float, float]:
    """One training run in a fresh process, so that its peak RSS is its own."""
    from infinite_id.training.config import config_from_dict
    from infinite_id.training.trainer import train

    torch.set_num_threads(threads)
    root = Path(root)
    cfg = config_from_dict(
        {
            "model": {"pretrained": str(root / "sd15")},
            "data": {"cache": str(root / "cache"), "resolution": 64, "num_workers": 0},
            "train": {"max_steps": steps, "batch_size": batch, "gradient_checkpointing": checkpointing},
            "output": {
                "dir": str(root / f"run{checkpointing}"),
                "checkpoint_every": 0,
                "progress_bar": False,
                "tensorboard": False,
                "log_every": 1000,
            },
        }
    )
    return train(cfg).samples_per_second, _peak_rss_mib()


def cpu_bench(steps: int, batch: int, threads: int) -> None:
    import multiprocessing

    from conftest import write_identity_dataset
    from tiny_models import FACE_DIM, save_tiny_base_model

    from infinite_id.faces.base import FaceEncoderInfo
    from infinite_id.training.preprocess import prepare_cache

    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_base_model(Path(tmp) / "sd15", "sd15")
        manifest = write_identity_dataset(Path(tmp) / "data")
        prepare_cache(manifest, Path(tmp) / "cache", face_encoder=FaceEncoderInfo("precomputed", "bench", FACE_DIM))
        rows = []
        for checkpointing in (False, True):
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                sps, rss = pool.apply(_cpu_run, (tmp, checkpointing, steps, batch, threads))
            rows.append((checkpointing, sps, rss))
    cpu = platform.processor() or platform.machine()
    print(f"CPU: {cpu}, {threads} thread(s), torch {torch.__version__}")
    print(f"tiny SD 1.5 UNet (32, 64), 64 px, batch {batch}, {steps} steps, fp32, through infinite_id.training.train")
    for checkpointing, sps, rss in rows:
        label = "on " if checkpointing else "off"
        print(f"  gradient checkpointing {label}: {sps:7.1f} samples/s, peak RSS {rss:7.0f} MiB (whole process)")
    print(f"  ratio on/off: {rows[1][1] / rows[0][1]:.2f}x samples/s, {rows[1][2] / rows[0][2]:.2f}x peak RSS")


def _gpu_run(checkpointing: bool, steps: int, batch: int, warmup: int) -> str:
    from infinite_id.attention_processors import InfiniteIDAttentionState, install_processors
    from infinite_id.models.projectors import IdentityProjection, IdentityProjectionConfig
    from infinite_id.models.unet_configs import build_unet
    from infinite_id.training.adapter_model import AdapterTrainingModel, trainable_parameters

    device, dtype = torch.device("cuda"), torch.bfloat16
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    unet = build_unet("sdxl").to(device, dtype).requires_grad_(False)
    install_processors(unet)
    projection = IdentityProjection(IdentityProjectionConfig(cross_attention_dim=2048)).to(device)
    params = trainable_parameters(AdapterTrainingModel(unet, projection, image_encoder=None))
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    n_params = sum(p.numel() for p in unet.parameters())
    latents = torch.randn(batch, 4, 128, 128, device=device)
    text = torch.randn(batch, 77, 2048, device=device, dtype=dtype)
    time_ids = torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * batch, device=device, dtype=dtype)
    added = {"text_embeds": torch.randn(batch, 1280, device=device, dtype=dtype), "time_ids": time_ids}
    clip = torch.randn(batch, 257, 1280, device=device)
    face = torch.randn(batch, 512, device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype):
            state = InfiniteIDAttentionState(id_tokens=projection(clip, face), text_cross_attention=False)
            t = torch.randint(0, 1000, (batch,), device=device)
            kwargs = {"added_cond_kwargs": added, "cross_attention_kwargs": {"infinite_id": state}}
            pred = unet(latents.to(dtype), t, text, **kwargs).sample
            loss = torch.nn.functional.mse_loss(pred.float(), latents)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    label = f"  gradient checkpointing {'on ' if checkpointing else 'off'}:"
    try:
        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        return f"{label} out of memory at batch {batch}"
    sps = steps * batch / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30
    return f"{label} {sps:6.2f} samples/s, peak {peak:5.1f} GiB ({n_params / 1e9:.2f}B UNet parameters)"


def gpu_bench(steps: int, batch: int, warmup: int) -> None:
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"SDXL-size UNet (random weights), 1024 px (128x128 latents), batch {batch}, bf16 autocast")
    for checkpointing in (False, True):
        print(_gpu_run(checkpointing, steps, batch, warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="SDXL-size benchmark on CUDA")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU benchmark)")
    args = parser.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA device")
        gpu_bench(args.steps or 10, args.batch or 2, args.warmup)
    else:
        cpu_bench(args.steps or 20, args.batch or 4, args.threads)


if __name__ == "__main__":
    main()
