"""The fast mode's speed/quality curve in the miniature world: ID similarity, attribute accuracy and CLIP-T of the
identity stream against the step cost, for mixed-attention windows ``(0, w)`` with the text stream stopped when the
window closes (``text_stream="window"``).

Every point runs on the same identities, prompts and seeds as the exact mode (``w = 1``), so its metric changes
are paired differences, reported with their standard errors. The step cost of a point is exact arithmetic on
the calls the pipeline makes: a share ``w`` of the calls runs both streams, the rest the identity stream alone,
priced with the per-call cost ratios against the plain pipeline (``--two-stream``, ``--identity``; defaults: the
SDXL FLOP ratios counted by ``infinite-id bench --flops-only``). The shipped miniature models are used.

    python bench/fast_mode_curve.py --out /tmp/fast-curve                 # 8 identities x 4 prompts x 1 seed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from infinite_id.evaluation.claims import metric_value, paired_difference
from infinite_id.evaluation.methods import Method
from infinite_id.evaluation.metrics import FaceSimilarity, summarize
from infinite_id.evaluation.runner import EvalSettings
from infinite_id.outputs import atomic_write
from infinite_id.sampling import call_progress, text_stream_calls
from infinite_id.world.experiments import reproduce as rp
from infinite_id.world.models.weights import resolve_weights_dir
from infinite_id.world.models.world_metrics import KnownLayoutFaceAnalyzer, load_attribute_scorer, load_clip_scorer

METRICS = ("face_sim", "attr_acc", "clip_t")


def point_method(window_end: float) -> Method:
    """``w = 1``: the exact mode (the paper); ``w = 0``: the identity stream alone; between: the fast mode."""
    if window_end >= 1.0:
        return Method("exact", "exact (w = 1)", {"self_attention": "mixed", "adain": "auto"})
    if window_end <= 0.0:
        return Method("w0", "identity stream only (w = 0)", {"self_attention": "independent", "adain": False})
    return Method(
        f"w{window_end:g}",
        f"fast, w = {window_end:g}",
        {
            "self_attention": "mixed",
            "adain": "auto",
            "text_stream": "window",
            "mixed_attention_window": (0.0, window_end),
        },
    )


def two_stream_share(window_end: float, steps: int, timesteps: list[float]) -> float:
    """The share of UNet calls that run both streams (from the pipeline's own arithmetic)."""
    if window_end >= 1.0:
        return 1.0
    return text_stream_calls(call_progress(timesteps), (0.0, window_end), "window") / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--windows", default="1,0.5,0.3,0.2,0.15,0.1,0")
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--two-stream", type=float, default=2.154, help="two-stream call cost / plain call")
    parser.add_argument("--identity", type=float, default=1.043, help="identity-stream call cost / plain call")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    config = rp.ReproduceConfig(identities=args.identities, prompts=args.prompts, seeds=args.seeds, steps=args.steps)
    weights = resolve_weights_dir(None, [*rp.METRIC_STAGES, "adapter_identity_enhanced"])
    identities, layouts = rp._identities(out, config)

    def analyzer(stage: str) -> KnownLayoutFaceAnalyzer:
        a = KnownLayoutFaceAnalyzer(weights, stage, threshold=config.detector_threshold)
        for identity in identities:
            a.remember(rp.Image.open(identity.images[0]).convert("RGB"), layouts[identity.name])
        return a

    adapter = rp._adapter_paths(weights, {})["identity_enhanced"]
    pipe = rp._load_pipe(weights, adapter, analyzer("face_encoder"))
    pipe.scheduler.set_timesteps(args.steps)
    timesteps = pipe.scheduler.timesteps.tolist()
    clip, attributes = load_clip_scorer(weights), load_attribute_scorer(weights)
    face = FaceSimilarity(analyzer("face_encoder_eval"))
    prompt_set = rp._prompt_sets(config)["raw"]

    windows = [float(w) for w in args.windows.split(",")]
    records: dict[float, list[dict]] = {}
    seconds: dict[float, float] = {}
    for w in windows:
        method = point_method(w)
        settings = EvalSettings(
            model=str(weights / "base"),
            adapter=str(adapter),
            methods=[method.name],
            seeds=list(range(args.seeds)),
            num_inference_steps=args.steps,
            guidance_scale=config.guidance_scale,
            height=rp.IMAGE_SIZE,
            width=rp.IMAGE_SIZE,
            training_face_encoder="face_encoder",
        )
        runner = rp.WorldEvaluationRunner(
            pipe, out / "runs" / method.name, settings, [method], identities, [prompt_set],
            clip=clip, face=face, attributes=attributes,
        )  # fmt: skip
        start = time.perf_counter()
        rows = runner.run()
        seconds[w] = time.perf_counter() - start
        records[w] = rows
        print(f"w={w:g}: {len(rows)} images, {seconds[w]:.0f} s", file=sys.stderr, flush=True)

    exact = records[max(windows)]
    lines = [
        f"Fast-mode curve: {args.identities} identities x {args.prompts} prompts x {args.seeds} seed(s), "
        f"{args.steps} DDIM steps, shipped miniature weights; step cost = share x {args.two_stream} + "
        f"(1 - share) x {args.identity} (per-call cost vs the plain pipeline)",
        "",
        "| window end w | two-stream calls | step cost vs plain | ID sim | d ID sim (paired) | attr acc | "
        "d attr acc | CLIP-T | d CLIP-T |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    points = []
    for w in windows:
        share = two_stream_share(w, args.steps, timesteps)
        cost = share * args.two_stream + (1 - share) * args.identity
        cells, point = [], {"window_end": w, "two_stream_share": share, "step_cost": cost}
        for m in METRICS:
            stats = summarize([metric_value(r, m) for r in records[w]])
            diff = paired_difference(records[w], exact, m)  # no face counts as 0, as in the tables
            mean, sem, d, d_sem = stats["mean"], stats["sem"], diff["mean"], diff["sem"]
            point.update({m: mean, f"{m}_sem": sem, f"d_{m}": d, f"d_{m}_sem": d_sem})
            cells += [f"{mean:.3f} +- {sem:.3f}", f"{d:+.3f} +- {d_sem:.3f}"]
        points.append(point)
        lines.append(f"| {w:g} | {share:.2f} | {cost:.2f}x | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    atomic_write(out / "curve.json", json.dumps(points, indent=2) + "\n")
    atomic_write(out / "curve.md", text + "\n")


if __name__ == "__main__":
    main()
