"""One GPU benchmark, unattended, in at most about five minutes: plain vs identity stream vs two-stream vs fast.

On an SDXL-size UNet (the real SDXL config, random weights) at 1024 px, in bf16 and in fp16, with and without
``torch.compile``, one guided step (classifier-free guidance, batch 1) of each variant:

* ``plain``: diffusers' own attention processors, 2 rows: the plain pipeline's step.
* ``identity``: the identity stream alone (image cross-attention, plain self-attention), 2 rows.
* ``two-stream``: the exact mode, 4 rows, mixed attention with AdaIN-mean.
* ``fast``: the fast preset (``infinite_id.sampling.FAST_PRESET``), whose steps are two-stream steps inside the
  mixed-attention window and identity steps after it: its average step is mixed from the two measured steps by
  the share of two-stream calls in a 30-step run.

Per-step time (median of round-robin repeats in this process, see ``infinite_id.evaluation.speed.round_robin``),
images/s (30 steps, UNet only), peak memory (``torch.cuda.max_memory_allocated`` over one call of the variant,
model weights included), FLOPs per step (counted on the meta device) and model FLOPs utilisation against the
measured bf16 matmul peak of the card. Compilation runs while time is left in ``--budget``; a configuration it
cannot fit is printed as skipped. Prints one Markdown table.

    python bench/gpu.py                  # one GPU
    python bench/gpu.py --dry-run        # CPU, tiny UNet, 64 px, seconds: the CI check that the script runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import platform
import statistics
import sys
import time
from typing import Any

import torch

from infinite_id.evaluation.speed import (
    STEPS_PER_IMAGE,
    build_unet,
    count_flops,
    fast_mode_share,
    measure_matmul_peak,
    prepare_variant,
    round_robin,
)

MEASURED = ("plain", "identity", "two-stream")
DTYPES = ("bfloat16", "float16")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def count_variant_flops(kind: str, size: int) -> dict[str, float]:
    """FLOPs of one guided step per variant, on the meta device (no weights, exact for any size)."""
    flops = {}
    for variant in MEASURED:
        unet = build_unet(kind, "meta", torch.float32)
        inputs, _ = prepare_variant(unet, variant, kind, 1, size, "meta", torch.float32)
        flops[variant] = count_flops(unet, inputs)[0]
    return flops


def _peak_memory(fn, device: str) -> float | None:
    """Peak allocated memory (GiB) during one call, model weights included; None off CUDA."""
    if not device.startswith("cuda"):
        fn()
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated() / 2**30


def measure(
    kind: str, size: int, device: str, dtype: torch.dtype, compile_backend: str | None, args, deadline: float
) -> list[dict[str, Any]]:
    """The measured variants' steps in one dtype, eager (``compile_backend=None``) or compiled, while time is left
    (a compilation is skipped when the longest one so far would overrun the deadline)."""
    plain_unet = build_unet(kind, device, dtype)
    ours_unet = build_unet(kind, device, dtype)
    inputs = {}
    for variant in MEASURED:
        unet = plain_unet if variant == "plain" else ours_unet
        inputs[variant] = prepare_variant(unet, variant, kind, 1, size, device, dtype)

    def caller(model, kw):
        def run() -> None:
            with torch.no_grad():
                model(**kw)

        return run

    rows: list[dict[str, Any]] = []
    mode, plain_model, ours_model = "eager", plain_unet, ours_unet
    if compile_backend is not None:
        mode = f"compile ({compile_backend})"
        plain_model = torch.compile(plain_unet, backend=compile_backend, dynamic=False)
        ours_model = torch.compile(ours_unet, backend=compile_backend, dynamic=False)
    calls = {v: caller(plain_model if v == "plain" else ours_model, inputs[v][0]) for v in MEASURED}
    ready, peaks, longest = {}, {}, 0.0
    for variant, fn in calls.items():
        if time.perf_counter() + longest > deadline:
            rows.append({"mode": mode, "variant": variant, "skipped": "time budget spent"})
            continue
        start = time.perf_counter()
        try:
            for _ in range(args.warmup):
                fn()
            _sync(device)
            peaks[variant] = _peak_memory(fn, device)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a result, not a crash
            rows.append(
                {
                    "mode": mode,
                    "variant": variant,
                    "skipped": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:160],
                }
            )
            continue
        ready[variant] = fn
        longest = max(longest, time.perf_counter() - start)
        print(f"{mode} {variant}: warm-up {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    times = round_robin(ready, args.repeats, device)
    for variant, samples in times.items():
        rows.append(
            {
                "mode": mode,
                "variant": variant,
                "rows": inputs[variant][1],
                "step_s": statistics.median(samples),
                "peak_gib": peaks.get(variant),
            }
        )
    del plain_unet, ours_unet, plain_model, ours_model, inputs, calls, ready
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def with_fast_rows(rows: list[dict[str, Any]], share: float) -> list[dict[str, Any]]:
    """Add the fast preset's average step after each mode's measured rows."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        group = [r for r in rows if r["mode"] == mode]
        out += group
        got = {r["variant"]: r for r in group if "step_s" in r}
        if "identity" in got and "two-stream" in got:
            two, ident = got["two-stream"], got["identity"]
            out.append(
                {
                    "mode": mode,
                    "variant": f"fast ({100 * share:.0f}% two-stream calls)",
                    "rows": f"{two['rows']}/{ident['rows']}",
                    "step_s": share * two["step_s"] + (1 - share) * ident["step_s"],
                    "peak_gib": two["peak_gib"],
                    "share": share,
                }
            )
    return out


def table(results: dict[str, list[dict[str, Any]]], flops: dict[str, float], peak: float) -> str:
    lines = [
        "| dtype | mode | variant | rows | step (ms) | vs plain | images/s | peak mem (GiB) | GFLOP/step | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype, rows in results.items():
        plain_step = {r["mode"]: r["step_s"] for r in rows if r["variant"] == "plain" and "step_s" in r}
        for r in rows:
            if "skipped" in r:
                lines.append(f"| {dtype} | {r['mode']} | {r['variant']} | - | skipped: {r['skipped']} |" + " |" * 5)
                continue
            if "share" in r:
                f = r["share"] * flops["two-stream"] + (1 - r["share"]) * flops["identity"]
            else:
                f = flops[r["variant"]]
            base = plain_step.get(r["mode"])
            ratio = f"{r['step_s'] / base:.2f}x" if base else "-"
            mem = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
            lines.append(
                f"| {dtype} | {r['mode']} | {r['variant']} | {r['rows']} | {1000 * r['step_s']:.1f} | {ratio} | "
                f"{1 / (STEPS_PER_IMAGE * r['step_s']):.3f} | {mem} | {f / 1e9:.3f} | "
                f"{100 * f / r['step_s'] / peak:.1f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny UNet, 64 px: check that it runs")
    parser.add_argument("--budget", type=float, default=None, help="seconds (default 270; dry run 60)")
    parser.add_argument("--repeats", type=int, default=None, help="round-robin repeats (default 10; dry run 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per variant (default 3; dry 1)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.dry_run:
        device, kind, size, matmul_n = "cpu", "tiny", 64, 256
        backend = None if args.no_compile else "eager"  # dynamo's tracing without inductor: seconds on CPU
        defaults = (60.0, 2, 1)
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU visible to torch; use --dry-run to check the script on CPU")
        device, kind, size, matmul_n = "cuda", "sdxl", 1024, 8192
        backend = None if args.no_compile else "inductor"
        defaults = (270.0, 10, 3)
    budget = args.budget if args.budget is not None else defaults[0]
    args.repeats = args.repeats or defaults[1]
    args.warmup = args.warmup or defaults[2]
    deadline = started + budget

    peak = measure_matmul_peak(device, torch.bfloat16, matmul_n)
    flops = count_variant_flops(kind, size)
    share = fast_mode_share()
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        parser.error(f"--dtypes: choose from {', '.join(DTYPES)}")
    rows: dict[str, list[dict[str, Any]]] = {d: [] for d in dtypes}
    for compile_backend in (None, backend) if backend else (None,):  # every eager step first, then compiled
        for name in dtypes:
            rows[name] += measure(kind, size, device, getattr(torch, name), compile_backend, args, deadline)
    results = {name: with_fast_rows(r, share) for name, r in rows.items()}

    card = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    header = (
        f"{dt.date.today().isoformat()}, {card}, torch {torch.__version__}: UNet {kind} (random weights), {size} px, "
        f"batch 1 with guidance; median of {args.repeats} round-robin steps after {args.warmup} warm-up; measured "
        f"bf16 matmul peak {peak / 1e12:.1f} TFLOP/s; total {time.perf_counter() - started:.0f} s"
        + (" (DRY RUN: the numbers mean nothing)" if args.dry_run else "")
    )
    text = header + "\n\n" + table(results, flops, peak)
    print(text)
    return text


if __name__ == "__main__":
    main()
