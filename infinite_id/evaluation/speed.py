"""Speed and memory of one denoising step: plain diffusers UNet vs identity stream only vs two-stream Infinite-ID.

Every number is measured in one run on one UNet (same weights, same seed) and reported as a ratio to the plain
UNet, because only ratios mean anything off a GPU. One "step" is one UNet call with classifier-free guidance, as
the pipelines make it:

* ``plain``: diffusers' own attention processors, ``2B`` rows (uncond + cond): the plain diffusers pipeline.
* ``identity``: Infinite-ID processors, identity stream only (``self_attention="independent"``, no text stream):
  ``2B`` rows plus the image cross-attention on the ID tokens, the cost of IP-Adapter.
* ``two-stream``: full Infinite-ID, ``4B`` rows (text stream + identity stream), mixed attention with AdaIN-mean.

Images/s assume 30 steps and count the UNet only (no text encoders, no VAE). Each measurement runs in its own
process, so peak memory is that measurement's alone: ``torch.cuda.max_memory_allocated`` on a GPU, the growth
of the peak resident set over the built model on CPU. With ``--speedups`` the two-stream step is also timed with
each SDPA backend, channels-last, ``torch.compile`` and CUDA graphs (GPU), and the share of per-step FLOPs
that could be shared between steps and streams (text and ID key/value projections, which do not change during
sampling) is counted. Model FLOPs utilisation (MFU) is reported against a measured dense bf16 matmul peak.

    infinite-id bench                                                # CPU, mid-size UNet, 256 px
    infinite-id bench --unet sdxl --device cuda --dtype bfloat16 --size 1024 --speedups
    python bench/pipeline_speed.py ...                               # the same
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
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from ..controls import DEFAULT_STEPS
from ..models.unet_configs import unet_config as shared_unet_config
from ..sampling import FAST_PRESET, call_progress, text_stream_calls

K = TypeVar("K")

VARIANTS = ("plain", "identity", "two-stream")
VARIANT_UNETS = ("tiny", "mid", "sdxl")
STEPS_PER_IMAGE = DEFAULT_STEPS


# ---------------------------------------------------------------------------------------------- models
def unet_config(kind: str) -> dict[str, Any]:
    """``mid``: an SD-1.5-shaped UNet small enough for CPU; ``sdxl``: the real SDXL UNet config (random weights);
    ``tiny``: for tests of this module (the shapes of :mod:`infinite_id.models.unet_configs`)."""
    if kind not in VARIANT_UNETS:
        raise ValueError(f"unknown UNet {kind!r}")
    return shared_unet_config(kind)


def build_unet(kind: str, device: str, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(kind))
    return unet.to(dtype=dtype).eval().requires_grad_(False)


def step_inputs(unet, kind: str, rows: int, size: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    gen = torch.Generator("cpu").manual_seed(1)
    latent = size // 8
    cfg = unet.config
    text_tokens = 77
    inputs = {
        "sample": torch.randn(rows, cfg.in_channels, latent, latent, generator=gen).to(device, dtype),
        "timestep": torch.tensor(500, device=device),
        "encoder_hidden_states": torch.randn(rows, text_tokens, cfg.cross_attention_dim, generator=gen).to(
            device, dtype
        ),
    }
    if kind == "sdxl":
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(rows, 1280, generator=gen).to(device, dtype),
            "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * rows, dtype=dtype, device=device),
        }
    return inputs


def id_token_count(kind: str) -> int:
    # The paper's default: 257 CLIP tokens (ViT-H at 224 px) + 4 face tokens on SDXL; 17 + 4 on the small UNet.
    return 261 if kind == "sdxl" else 21


def prepare_variant(unet, variant: str, kind: str, batch: int, size: int, device: str, dtype: torch.dtype):
    """Install processors and return (forward kwargs, rows)."""
    from infinite_id.attention_processors import InfiniteIDAttentionState, install_processors, is_installed

    cfg_rows = 2 * batch
    if variant == "plain":
        return step_inputs(unet, kind, cfg_rows, size, device, dtype), cfg_rows
    if not is_installed(unet):
        install_processors(unet)
    gen = torch.Generator("cpu").manual_seed(2)
    tokens = torch.randn(cfg_rows, id_token_count(kind), unet.config.cross_attention_dim, generator=gen)
    tokens = tokens.to(device, dtype)
    if variant == "identity":
        state = InfiniteIDAttentionState(text_rows=0, id_tokens=tokens, self_attention="independent")
        rows = cfg_rows
    else:
        state = InfiniteIDAttentionState(text_rows=cfg_rows, id_tokens=tokens, self_attention="mixed", adain="mean")
        rows = 2 * cfg_rows
    inputs = step_inputs(unet, kind, rows, size, device, dtype)
    inputs["cross_attention_kwargs"] = {"infinite_id": state}
    return inputs, rows


# ---------------------------------------------------------------------------------------------- measuring
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mib() -> float:
    """Peak resident set of this process so far (``ru_maxrss`` is bytes on macOS, KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return _rss_mib()


def count_flops(unet, inputs: dict[str, Any]) -> tuple[float, float]:
    """Total FLOPs of one step, and the FLOPs of the key/value projections of text and ID tokens (constant over
    the steps of a sampling run, and identical in both streams: the work that could be shared)."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    # The flop counter knows the CUDA attention kernels but not the CPU flash kernel: count the CPU math path.
    on_cpu = inputs["sample"].device.type == "cpu"
    backend = sdpa_kernel([SDPBackend.MATH]) if on_cpu else contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), backend, counter:
        unet(**inputs)
    per_module = counter.get_flop_counts()
    shareable = 0.0
    for name, ops in per_module.items():
        leaf = name.rsplit(".", 1)[-1]
        if ".attn2." in name and leaf in ("to_k", "to_v", "to_k_ip", "to_v_ip"):
            shareable += float(sum(ops.values()))
    return float(counter.get_total_flops()), shareable


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """One measurement (runs in a worker process)."""
    torch.set_num_threads(config["threads"])
    device, kind, variant = config["device"], config["unet"], config["variant"]
    dtype = getattr(torch, config["dtype"])
    unet = build_unet(kind, device, dtype)
    inputs, rows = prepare_variant(unet, variant, kind, config["batch"], config["size"], device, dtype)
    option = config.get("option") or "default"
    context = _option_context(option)
    model = unet
    if option == "channels-last":
        unet.to(memory_format=torch.channels_last)
        inputs["sample"] = inputs["sample"].contiguous(memory_format=torch.channels_last)
    elif option in ("compile", "cuda-graphs"):
        mode = "reduce-overhead" if option == "cuda-graphs" else "default"
        model = torch.compile(unet, mode=mode, dynamic=False)

    flops, shareable = (0.0, 0.0)
    if config.get("flops"):
        flops, shareable = count_flops(unet, inputs)
    result: dict[str, Any] = {**config, "rows": rows, "flops": flops, "shareable_flops": shareable}
    try:
        with torch.no_grad(), context:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                base_alloc = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            base_rss = _current_rss_mib()
            start = time.perf_counter()
            for _ in range(config["warmup"]):
                model(**inputs)
            _sync(device)
            result["warmup_s"] = time.perf_counter() - start
            times = []
            for _ in range(config["repeats"]):
                start = time.perf_counter()
                model(**inputs)
                _sync(device)
                times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a result, not a crash
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return result
    result["step_s"] = statistics.median(times)
    result["step_s_min"] = min(times)
    if device.startswith("cuda"):
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["activation_mib"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
    else:
        result["peak_mib"] = _rss_mib()
        result["activation_mib"] = max(_rss_mib() - base_rss, 0.0)
    return result


def _option_context(option: str):
    import contextlib

    if not option.startswith("sdpa-"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "sdpa-math": SDPBackend.MATH,
        "sdpa-flash": SDPBackend.FLASH_ATTENTION,
        "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
        "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    }[option]
    return sdpa_kernel([backend])


STRUCTURAL_OPTIONS = ("default", "channels-last", "compile", "cuda-graphs")


def _structured_model(unet, option: str):
    """Apply an option that changes the model itself; returns what to call."""
    if option == "channels-last":
        return unet.to(memory_format=torch.channels_last)
    if option in ("compile", "cuda-graphs"):
        return torch.compile(unet, mode="reduce-overhead" if option == "cuda-graphs" else "default", dynamic=False)
    return unet


def time_interleaved(
    entries: list[tuple[str, str]],
    kind: str,
    batch: int,
    size: int,
    device: str,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Step times of ``(variant, option)`` entries measured round-robin in one process, so that a change in the
    machine's load during the run hits every entry alike (the ratios stay fair on a shared CPU)."""
    models: dict[tuple[bool, str], Any] = {}
    ready: dict[tuple[str, str], tuple[Any, dict[str, Any], str]] = {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for variant, option in entries:
        structural = option if option in STRUCTURAL_OPTIONS else "default"
        key = (variant != "plain", structural)
        try:
            if key not in models:
                unet = build_unet(kind, device, dtype)
                if variant != "plain":
                    prepare_variant(unet, "identity", kind, batch, size, device, dtype)  # installs the processors
                models[key] = (unet, _structured_model(unet, structural))
            unet, model = models[key]
            inputs, rows = prepare_variant(unet, variant, kind, batch, size, device, dtype)
            if structural == "channels-last":
                inputs["sample"] = inputs["sample"].contiguous(memory_format=torch.channels_last)
            start = time.perf_counter()
            with torch.no_grad(), _option_context(option):
                for _ in range(warmup):
                    model(**inputs)
            _sync(device)
            out[(variant, option)] = {"rows": rows, "warmup_s": time.perf_counter() - start, "times": []}
            ready[(variant, option)] = (model, inputs, option)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a result, not a crash
            out[(variant, option)] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}

    def call(model, inputs, option):
        def run() -> None:
            with torch.no_grad(), _option_context(option):  # a fresh context each time: sdpa_kernel() is single-use
                model(**inputs)

        return run

    times = round_robin({entry: call(*args) for entry, args in ready.items()}, repeats, device)
    for entry, samples in times.items():
        out[entry].pop("times")
        out[entry].update(step_s=statistics.median(samples), step_s_min=min(samples))
    return out


def round_robin(calls: Mapping[K, Callable[[], object]], repeats: int, device: str = "cpu") -> dict[K, list[float]]:
    """Wall times of ``repeats`` runs of each call, taken in turn (call A, B, C, A, B, C, ...) in this process.

    The project's one way of timing variants against each other: a change in the machine's load during the run
    hits every variant alike, so the ratios of the medians stay fair on a shared CPU. Warm-up is the caller's.
    """
    out: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out[key].append(time.perf_counter() - start)
    return out


def fast_mode_share(steps: int = STEPS_PER_IMAGE, window_end: float | None = None) -> float:
    """The share of a run's UNet calls that carry both streams in the fast preset (``FAST_PRESET``), from the
    pipeline's own arithmetic (DDIM-like schedulers: one call per step)."""
    end = FAST_PRESET["mixed_attention_window"][1] if window_end is None else window_end
    progress = call_progress([float(steps - i) for i in range(steps)])
    return text_stream_calls(progress, (0.0, end), "window") / steps


def fast_mode_row(results: list[dict[str, Any]], batch: int, share: float) -> dict[str, Any] | None:
    """The fast preset's average step, from the two-stream and identity-stream steps measured in the same run:
    a share ``share`` of its calls is a two-stream call, the rest an identity-stream call. Its peak memory is the
    two-stream step's (the peak falls inside the window)."""
    rows = {r["variant"]: r for r in results if r["batch"] == batch and "step_s" in r}
    two, ident = rows.get("two-stream"), rows.get("identity")
    if two is None or ident is None:
        return None

    def mix(key: str) -> float | None:
        if two.get(key) is None or ident.get(key) is None:
            return None
        return share * two[key] + (1 - share) * ident[key]

    row = {k: two.get(k) for k in ("peak_mib", "activation_mib", "unet", "device", "dtype", "size")}
    row.update(
        variant=f"fast ({100 * share:.0f}% two-stream calls)",
        batch=batch,
        rows=f"{two['rows']}/{ident['rows']}",
        step_s=mix("step_s"),
        step_s_min=mix("step_s_min"),
        flops=mix("flops"),
    )
    return {k: v for k, v in row.items() if v is not None}


def measure_matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Dense matmul FLOP/s: the practical peak that MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- driver
def run_worker(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "infinite_id.evaluation.speed", "--worker", json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**config, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**config, "error": f"worker failed: {tail[:300]}"}
    return json.loads(lines[-1])


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def report(results: list[dict[str, Any]], peak_flops: float | None, peak_label: str) -> str:
    """The main table: one row per (batch, variant), ratios to the plain UNet at the same batch size."""
    lines = [
        "| batch | variant | rows | step (ms) | vs plain | images/s (30 steps) | peak mem (MiB) | "
        "activation mem (MiB) | vs plain | GFLOP/step | vs plain | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plain = {r["batch"]: r for r in results if r["variant"] == "plain"}
    for r in results:
        base = plain.get(r["batch"], {})
        if "error" in r or "step_s" not in r:
            lines.append(f"| {r['batch']} | {r['variant']} | - | {r.get('error', 'no result')} |" + " |" * 8)
            continue
        step = r["step_s"]
        mfu = f"{100 * r['flops'] / step / peak_flops:.1f}%" if peak_flops and r.get("flops") else "-"
        memory = [r.get("peak_mib"), r.get("activation_mib")]
        mem_cells = " | ".join("-" if m is None else f"{m:.0f}" for m in memory)
        lines.append(
            f"| {r['batch']} | {r['variant']} | {r['rows']} | {1000 * step:.1f} | "
            f"{_ratio(step, base.get('step_s'))} | "
            f"{r['batch'] / (STEPS_PER_IMAGE * step):.3f} | {mem_cells} | "
            f"{_ratio(r.get('activation_mib'), base.get('activation_mib'))} | {r.get('flops', 0) / 1e9:.1f} | "
            f"{_ratio(r.get('flops'), base.get('flops'))} | {mfu} |"
        )
    notes = []
    if peak_flops:
        notes.append(f"MFU against the measured {peak_label} dense matmul peak of {peak_flops / 1e12:.3f} TFLOP/s.")
    for r in results:
        if r.get("shareable_flops") and r.get("flops"):
            notes.append(
                f"batch {r['batch']} {r['variant']}: text/ID key-value projections are "
                f"{100 * r['shareable_flops'] / r['flops']:.2f}% of the step's FLOPs, the most that caching them "
                "across steps and streams could save."
            )
    return "\n".join(lines + [""] + notes)


def speedup_report(timings: dict[tuple[str, str], dict[str, Any]], batch: int) -> str:
    """Speed-up table: each option's plain and two-stream step, against the default two-stream step."""
    lines = [
        f"| option (batch {batch}) | plain step (ms) | two-stream step (ms) | two-stream vs plain | "
        "two-stream vs default two-stream |",
        "|---|---|---|---|---|",
    ]
    default = timings.get(("two-stream", "default"), {}).get("step_s")
    for option in dict.fromkeys(o for _, o in timings):
        plain, two = timings.get(("plain", option), {}), timings.get(("two-stream", option), {})
        cells = []
        for t in (plain, two):
            cells.append(f"{1000 * t['step_s']:.1f}" if "step_s" in t else t.get("error", "-"))
        lines.append(
            f"| {option} | {cells[0]} | {cells[1]} | {_ratio(two.get('step_s'), plain.get('step_s'))} | "
            f"{_ratio(two.get('step_s'), default)} |"
        )
    return "\n".join(lines)


def flops_table(kind: str, size: int | None, batches: list[int]) -> str:
    """FLOPs per guided step of each variant, counted on the meta device: exact for any size, instantly."""
    size = size or (1024 if kind == "sdxl" else 256)
    lines = [
        f"FLOPs per guided UNet step, UNet {kind}, {size} px (meta device)",
        "",
        "| batch | variant | rows | params (M) | TFLOP/step | vs plain | shareable K/V projections |",
        "|---|---|---|---|---|---|---|",
    ]
    share = fast_mode_share()
    for batch in batches:
        plain, counted = None, {}
        for variant in VARIANTS:
            unet = build_unet(kind, "meta", torch.float32)
            inputs, rows = prepare_variant(unet, variant, kind, batch, size, "meta", torch.float32)
            flops, shareable = count_flops(unet, inputs)
            plain = plain or flops
            params = sum(p.numel() for p in unet.parameters()) / 1e6
            counted[variant] = (rows, flops)
            lines.append(
                f"| {batch} | {variant} | {rows} | {params:.0f} | {flops / 1e12:.3f} | {flops / plain:.3f}x | "
                f"{100 * shareable / flops:.2f}% |"
            )
        fast = share * counted["two-stream"][1] + (1 - share) * counted["identity"][1]
        lines.append(
            f"| {batch} | fast ({100 * share:.0f}% two-stream calls) | {counted['two-stream'][0]}/"
            f"{counted['identity'][0]} | {params:.0f} | {fast / 1e12:.3f} | {fast / plain:.3f}x | - |"
        )
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> str | None:
    """Run the benchmark (or, with ``--worker``, one measurement); returns the Markdown report."""
    parser = argparse.ArgumentParser(prog="infinite-id bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--unet", choices=("tiny", "mid", "sdxl"), help="default: sdxl on GPU, mid on CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--size", type=int, default=None, help="image side in px (default 1024 sdxl, 256 mid)")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speedups", action="store_true", help="also time the two-stream step with speed-ups")
    parser.add_argument("--speedup-batch", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument(
        "--in-process", action="store_true", help="measure in this process (quick look; memory is not isolated)"
    )
    parser.add_argument(
        "--flops-only", action="store_true", help="count FLOPs on the meta device (no weights, no GPU needed) and stop"
    )
    args = parser.parse_args(argv)
    if args.flops_only:
        return flops_table(args.unet or "sdxl", args.size, [int(b) for b in args.batch_sizes.split(",")])

    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return None

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if gpu else "float32")
    kind = args.unet or ("sdxl" if gpu else "mid")
    size = args.size or (1024 if kind == "sdxl" else 256)
    repeats = args.repeats or (20 if gpu else 5)
    warmup = args.warmup or (3 if gpu else 1)
    common = dict(unet=kind, device=device, dtype=dtype, size=size, repeats=repeats, warmup=warmup)
    common["threads"] = args.threads

    dtype_t = getattr(torch, dtype)
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
        timings = time_interleaved(
            [(v, "default") for v in variants], kind, batch, size, device, dtype_t, repeats, warmup
        )
        for variant in variants:
            # memory and FLOPs in a process of its own (one warm-up call and one step), times from the shared run
            config = {**common, "variant": variant, "batch": batch, "option": None, "flops": True, "repeats": 1}
            config["warmup"] = 1
            isolated = measure(config) if args.in_process else run_worker(config, args.timeout)
            row = {k: v for k, v in isolated.items() if k not in ("step_s", "step_s_min", "warmup_s")}
            row.update(timings[(variant, "default")])
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
        fast = fast_mode_row(results, batch, fast_mode_share())
        if fast is not None:
            results.append(fast)
    speedups = None
    if args.speedups:
        options = ["default", "channels-last", "sdpa-math", "compile"]
        if gpu:
            options += ["sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "cuda-graphs"]
        entries = [(v, o) for o in options for v in ("plain", "two-stream")]
        speedup_warmup = max(warmup, 3)
        speedups = time_interleaved(entries, kind, args.speedup_batch, size, device, dtype_t, repeats, speedup_warmup)
        print(json.dumps({f"{v}/{o}": t for (v, o), t in speedups.items()}), file=sys.stderr)

    peak, peak_label = None, ""
    if gpu:
        peak, peak_label = measure_matmul_peak(device, torch.bfloat16, 8192), "bf16"
    else:
        torch.set_num_threads(args.threads)
        peak, peak_label = measure_matmul_peak(device, torch.float32, 1024, repeats=5), "fp32 (CPU)"
    machine = torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()} CPU"
    header = (
        f"UNet {kind} ({sum(p.numel() for p in build_unet(kind, 'meta', torch.float32).parameters()) / 1e6:.0f}M "
        f"params), {size} px, {dtype}, {device} ({machine}, {args.threads} threads), torch {torch.__version__}, "
        f"step time: median of {repeats} round-robin steps after {warmup} warm-up"
    )
    text = header + "\n\n" + report(results, peak, peak_label)
    if speedups is not None:
        text += "\n\n" + speedup_report(speedups, args.speedup_batch)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            extra = {f"{v}/{o}": t for (v, o), t in (speedups or {}).items()}
            json.dump({"header": header, "peak_flops": peak, "results": results, "speedups": extra}, fh, indent=2)
    return text


if __name__ == "__main__":
    main()
