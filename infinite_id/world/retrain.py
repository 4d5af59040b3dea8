"""Retrain the miniature world's models from scratch, in order, with fixed seeds.

    python -m infinite_id.world.retrain --out infinite_id/world/weights            # everything
    python -m infinite_id.world.retrain --out /tmp/w --only face_encoder,clip       # some stages
    python -m infinite_id.world.retrain --out /tmp/w --quick                        # a two-step smoke run

Each stage writes ``OUT/<stage>/`` with its weights and ``metrics.json``; a stage whose ``metrics.json``
exists is skipped (so an interrupted run continues where it stopped, and a stage interrupted midway resumes
from its own checkpoint). ``OUT/metrics.json`` collects every stage's held-out metrics.

Stages so far: the face encoder, the independent evaluation face encoder (same recipe, another seed), the
mini CLIP, the attribute classifier, the face detector, the VAE and the base model (UNet + assembly, after
the VAE and CLIP stages). The adapters come later.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .train_attributes import AttributeTrainingConfig, train_attribute_classifier
from .train_clip import ClipTrainingConfig, train_clip
from .train_face import FaceTrainingConfig, train_face_encoder
from .train_landmarks import LandmarkTrainingConfig, train_landmark_detector
from .train_unet import UnetTrainingConfig, train_unet
from .train_vae import VaeTrainingConfig, train_vae

SUMMARY_NAME = "metrics.json"


def _train_base(stage_dir: Path, config: UnetTrainingConfig, progress: bool = True) -> dict:
    """The base model stage: the UNet on top of the ``vae`` and ``clip`` stages trained before it."""
    return train_unet(stage_dir, stage_dir.parent / "vae", stage_dir.parent / "clip", config, progress=progress)


# name -> (trainer, full config). Seeds are fixed here: this table is the recipe of the shipped weights.
STAGES: dict[str, tuple[Callable, object]] = {
    "face_encoder": (train_face_encoder, FaceTrainingConfig(seed=0, steps=1500)),
    "face_encoder_eval": (train_face_encoder, FaceTrainingConfig(seed=1, steps=1000)),
    "clip": (train_clip, ClipTrainingConfig(seed=0, steps=1000)),
    "attributes": (train_attribute_classifier, AttributeTrainingConfig(seed=0, steps=600)),
    "landmarks": (train_landmark_detector, LandmarkTrainingConfig(seed=0, steps=600)),
    "vae": (train_vae, VaeTrainingConfig(seed=0, steps=1000)),
    "base": (_train_base, UnetTrainingConfig(seed=0, steps=2000)),
}

_QUICK = {"steps": 2, "batch_size": 8}
_QUICK_EVAL = {"eval_identities": 4, "eval_photos": 2, "eval_images": 12}


def quick_config(config):
    """The same recipe shrunk to a two-step smoke run (for tests and for checking an installation)."""
    names = {f.name for f in dataclasses.fields(config)}
    changes = {k: v for k, v in {**_QUICK, **_QUICK_EVAL}.items() if k in names}
    if type(config) in (VaeTrainingConfig, UnetTrainingConfig):
        changes["batch_size"] = 2
    if "num_identities" in names and type(config) is FaceTrainingConfig:
        changes["num_identities"] = 8
    return dataclasses.replace(config, **changes)


def retrain(
    out_dir: str | Path, only: list[str] | None = None, quick: bool = False, force: bool = False, progress: bool = True
) -> dict[str, dict]:
    """Run the stages (all, or ``only``) into ``out_dir``; return ``{stage: metrics}`` for every finished stage."""
    out = Path(out_dir)
    selected = only or list(STAGES)
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {list(STAGES)}")
    out.mkdir(parents=True, exist_ok=True)
    summary_file = out / SUMMARY_NAME
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    for name in selected:
        trainer, config = STAGES[name]
        stage_dir = out / name
        metrics_file = stage_dir / "metrics.json"
        if metrics_file.is_file() and not force:
            summary[name] = json.loads(metrics_file.read_text())["metrics"]
            continue
        config = quick_config(config) if quick else config
        started = time.perf_counter()
        metrics = trainer(stage_dir, config, progress=progress)
        summary[name] = {**metrics, "train_seconds": round(time.perf_counter() - started, 1)}
        summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Retrain the miniature world's models from scratch.")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per stage)")
    parser.add_argument("--only", default="", help=f"comma-separated stages, from: {','.join(STAGES)}")
    parser.add_argument("--quick", action="store_true", help="two steps per stage: a smoke run")
    parser.add_argument("--force", action="store_true", help="retrain stages that already have metrics")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    print(json.dumps(retrain(args.out, only, quick=args.quick, force=args.force), indent=2))


if __name__ == "__main__":
    main()
