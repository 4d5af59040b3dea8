"""A memory model: the peak GPU memory of each mode, predicted from the sizes of the tensors a run creates.

The model runs the real code (the UNet step of each variant, the VAE decode) on the meta device, where tensors
have shapes but no data, and follows every tensor the run allocates and frees (a ``TorchDispatchMode``): the peak
of the live activation bytes is what a caching allocator must hold at once. Attention is priced as the fused
kernels the GPU runs (flash / memory-efficient SDPA: the output and a row statistic, never the ``N x N`` score
matrix), because on the meta device SDPA would take the math path. Predicted peak = resident weights + the
largest activation peak of a phase (a denoising step, or one VAE decode), plus the latents and prompt tensors
carried between steps (small). Not modelled: allocator fragmentation, cuBLAS/cuDNN workspaces and the CUDA
context (a few hundred MiB); ``bench/gpu.py`` measures the real peak when a GPU is there.

    python -m infinite_id.evaluation.memory                       # SDXL 1024 px fp16: every mode, 8/12/16 GB
    python -m infinite_id.evaluation.memory --check --size 256    # the model against CPU measurements
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveTensorPeak", "activation_peak", "predict_sdxl", "unet_step_peak", "vae_decode_peak"]

GIB = 2**30


class _FusedAttention(TorchFunctionMode):
    """SDPA as the GPU's fused kernels allocate it: the output plus a float32 logsumexp per query row."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
            out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
            torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)  # logsumexp, freed at once
            return out
        return func(*args, **kwargs)


class LiveTensorPeak(TorchDispatchMode):
    """Follows the storages created inside the context: ``live`` bytes now, ``peak`` bytes at most.

    A storage counts from its first tensor until the last tensor seen on it is garbage; views share their base's
    storage and count once; storages that existed before (weights, inputs: pass them as ``external``) never count.
    """

    def __init__(self, external: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}
        self._external = {t.untyped_storage()._cdata for t in external}

    def _release(self, key: int, nbytes: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= nbytes

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._external:
            return
        if key not in self._refs:
            self._refs[key] = 0
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        weakref.finalize(tensor, self._release, key, storage.nbytes())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out


def activation_peak(fn: Callable[[], Any], external: Iterable[torch.Tensor] = ()) -> int:
    """Peak live bytes of the tensors ``fn`` creates (its result is dropped at the end), with fused attention."""
    tracker = LiveTensorPeak(external)
    with torch.no_grad(), _FusedAttention(), tracker:
        fn()
    return tracker.peak


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in nested inputs, including those held by dataclasses (the processors' state)."""
    found = []
    for value in tree_flatten(obj)[0]:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif dataclasses.is_dataclass(value):
            found += [v for v in vars(value).values() if isinstance(v, torch.Tensor)]
    return found


def unet_step_peak(kind: str, variant: str, size: int, dtype: torch.dtype, batch: int = 1, device="meta") -> int:
    """Activation peak of one guided UNet step of ``variant`` (``plain``, ``identity``, ``two-stream``)."""
    from .speed import build_unet, prepare_variant

    unet = build_unet(kind, device, dtype)
    inputs, _ = prepare_variant(unet, variant, kind, batch, size, device, dtype)
    external = [*unet.parameters(), *unet.buffers(), *_tensors(inputs)]
    return activation_peak(lambda: unet(**inputs), external)


SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=1024,
)


def vae_decode_peak(size: int, dtype: torch.dtype, images: int = 1, config: dict | None = None, device="meta") -> int:
    """Activation peak of decoding ``images`` latents in one VAE call (the SD/SDXL VAE by default)."""
    from diffusers import AutoencoderKL

    with torch.device(device):
        vae = AutoencoderKL(**(config or SDXL_VAE)).to(dtype=dtype).eval()
    latents = torch.empty(images, 4, size // 8, size // 8, device=device, dtype=dtype)
    external = [*vae.parameters(), *vae.buffers(), latents]
    return activation_peak(lambda: vae.decode(latents, return_dict=False), external)


# Parameter counts of the SDXL components (the UNet's from its config; the others are the released models').
SDXL_PARAMS = {
    "unet": 2_567_463_684,
    "id_kv": 340_787_200,  # to_k_ip / to_v_ip on the 70 cross-attention layers (counted by infinite-id bench)
    "text_encoders": 123_060_480 + 694_659_840,  # CLIP ViT-L text + OpenCLIP bigG text
    "image_encoder": 632_076_800,  # CLIP ViT-H/14 vision tower with projection
    "vae": 83_653_863,
    "mappers": 30_000_000,  # the adapter's projection (order of magnitude; small)
}


def predict_sdxl(size: int = 1024, dtype: torch.dtype = torch.float16) -> list[dict[str, Any]]:
    """Predicted peak per mode for SDXL, with every model resident and with model CPU offload."""
    width = torch.empty((), dtype=dtype).element_size()
    p = SDXL_PARAMS
    unet_w = (p["unet"] + p["id_kv"] + p["mappers"]) * width
    plain_unet_w = p["unet"] * width
    others = (p["text_encoders"] + p["image_encoder"]) * width
    vae_w, vae32_w = p["vae"] * width, p["vae"] * 4  # SDXL's VAE decodes upcast to float32 in float16 runs
    steps = {v: unet_step_peak("sdxl", v, size, dtype) for v in ("plain", "identity", "two-stream")}
    decode = vae_decode_peak(size, torch.float32 if dtype == torch.float16 else dtype)
    decode2 = vae_decode_peak(size, torch.float32 if dtype == torch.float16 else dtype, images=2)
    carried = 4 * (size // 8) ** 2 * 4 * 4 + 4 * 77 * 2048 * width  # latents of both streams, prompt rows
    modes = [
        ("plain SDXL (diffusers)", plain_unet_w, steps["plain"], decode, p["text_encoders"] * width),
        ("identity stream only", unet_w, steps["identity"], decode, others),
        ("exact two-stream", unet_w, steps["two-stream"], decode, others),
        ("exact two-stream, text stream returned", unet_w, steps["two-stream"], decode, others),
        ("exact two-stream, both streams in one decode (before)", unet_w, steps["two-stream"], decode2, others),
        ("fast preset", unet_w, steps["two-stream"], decode, others),
    ]
    rows = []
    for name, weights, step, dec, other in modes:
        vae_dec_w = vae32_w if dtype == torch.float16 else vae_w
        resident = weights + other + vae_dec_w
        row = {
            "mode": name,
            "weights_gib": resident / GIB,
            "step_activation_gib": step / GIB,
            "decode_activation_gib": dec / GIB,
            "peak_gib": (resident + carried + max(step, dec)) / GIB,
            # model offload: one model on the GPU at a time (the UNet while denoising, then the VAE)
            "offload_peak_gib": max(weights + carried + step, vae_dec_w + carried + dec) / GIB,
        }
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], size: int, dtype: str) -> str:
    lines = [
        f"Predicted peak GPU memory, SDXL {size} px, {dtype}, batch 1 with guidance (meta-device memory model)",
        "",
        "| mode | resident weights (GiB) | step activations (GiB) | decode activations (GiB) | "
        "peak, all resident (GiB) | peak, model offload (GiB) | fits 8 / 12 / 16 GiB (all resident) | "
        "fits 8 / 12 GiB (offload) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fits = " / ".join("yes" if r["peak_gib"] <= g else "no" for g in (8, 12, 16))
        off = " / ".join("yes" if r["offload_peak_gib"] <= g else "no" for g in (8, 12))
        lines.append(
            f"| {r['mode']} | {r['weights_gib']:.2f} | {r['step_activation_gib']:.2f} | "
            f"{r['decode_activation_gib']:.2f} | {r['peak_gib']:.2f} | {r['offload_peak_gib']:.2f} | {fits} | {off} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CPU check
def _rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _check_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One measured step in a fresh process: growth of the peak resident set over the built model."""
    from .speed import build_unet, prepare_variant

    torch.set_num_threads(1)
    dtype = getattr(torch, config["dtype"])
    # A warm-up call at 64 px first, so that one-off costs (kernel libraries, their code caches) are in the base.
    if config["what"] == "vae":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(**SDXL_VAE).to(dtype=dtype).eval()

        def call(size: int) -> None:
            vae.decode(torch.randn(1, 4, size // 8, size // 8, dtype=dtype))
    else:
        unet = build_unet(config["unet"], "cpu", dtype)

        def call(size: int) -> None:
            unet(**prepare_variant(unet, config["what"], config["unet"], 1, size, "cpu", dtype)[0])

    with torch.no_grad():
        call(64)
        base = _rss_bytes()
        call(config["size"])
    return {"measured": _rss_bytes() - base}


def check(unet: str, size: int, dtype: str) -> str:
    """Predicted activation peak (meta device) against the measured growth of the peak RSS (CPU, own process)."""
    lines = [
        f"Memory model against CPU, UNet {unet} / SDXL VAE at {size} px, {dtype} (measured: peak RSS growth in a "
        "fresh process over the built model after a 64 px warm-up call, one call)",
        "",
        "| what | predicted (MiB) | measured on CPU (MiB) | measured / predicted |",
        "|---|---|---|---|",
    ]
    torch_dtype = getattr(torch, dtype)
    for what in ("plain", "identity", "two-stream", "vae"):
        if what == "vae":
            predicted = vae_decode_peak(size, torch_dtype)
        else:
            predicted = unet_step_peak(unet, what, size, torch_dtype)
        config = {"what": what, "unet": unet, "size": size, "dtype": dtype}
        cmd = [sys.executable, "-m", "infinite_id.evaluation.memory", "--worker", json.dumps(config)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        measured = json.loads(out)["measured"]
        lines.append(
            f"| {what} | {predicted / 2**20:.0f} | {measured / 2**20:.0f} | {measured / max(predicted, 1):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--check", action="store_true", help="compare the model with CPU measurements")
    parser.add_argument("--unet", default="mid", choices=("tiny", "mid", "sdxl"), help="UNet for --check")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_check_worker(json.loads(args.worker))))
        return None
    if args.check:
        text = check(args.unet, args.size, "float32" if args.dtype == "float16" else args.dtype)
    else:
        text = table(predict_sdxl(args.size, getattr(torch, args.dtype)), args.size, args.dtype)
    print(text)
    return text


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
