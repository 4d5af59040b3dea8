"""Retrain the miniature world's models from scratch, in order, with fixed seeds.

    python -m infinite_id.world.trainers.retrain --out infinite_id/world/weights            # everything
    python -m infinite_id.world.trainers.retrain --out /tmp/w --only face_encoder,clip       # some stages
    python -m infinite_id.world.trainers.retrain --out /tmp/w --quick                        # a two-step smoke run
    python -m infinite_id.world.trainers.retrain --out /tmp/w --jobs 2                       # two stages at a time

Each stage writes ``OUT/<stage>/`` with its weights and ``metrics.json``; a stage whose ``metrics.json``
exists is skipped (so an interrupted run continues where it stopped, and a stage interrupted midway resumes
from its own checkpoint). ``OUT/metrics.json`` collects every stage's held-out metrics.

Stages: the face encoder, the independent evaluation face encoder (same recipe, another seed), the mini CLIP,
the attribute classifier, the face detector, the VAE, the base model (UNet + assembly, after the VAE and CLIP
stages) and the two Infinite-ID adapters (``identity-enhanced`` and ``joint`` modes, trained with
``infinite_id.training`` after the base model and the face encoder).

``--snapshot`` copies each unfinished stage's checkpoint (weights only) and best-so-far weights to ``partial-*``
files and exits:
commit those at the end of a working session, so a stage resumes even where the git-ignored checkpoint is lost.

``--jobs N`` runs up to N stages at once, each in its own process with one torch thread, starting a stage only
when the stages it needs (their ``inputs`` in :data:`~infinite_id.world.stages.STAGE_TABLE`) are finished; each
stage then logs to ``OUT/logs/<stage>.log``. The stages, their recipe, inputs and files are that one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from ...outputs import atomic_write
from ..stages import STAGE_TABLE
from .latent_cache import LatentCacheConfig, build_latent_cache
from .train_adapters import AdapterTrainingConfig, train_adapter
from .train_face import FaceTrainingConfig
from .train_unet import UnetTrainingConfig, train_unet
from .train_utils import snapshot_checkpoint
from .train_vae import DecoderRefinementConfig, VaeTrainingConfig, refine_decoder, train_vae

SUMMARY_NAME = "metrics.json"


def train_vae_stage(stage_dir: Path, config: VaeTrainingConfig, progress: bool = True) -> dict:
    """The VAE stage: its identity and feature losses read the ``face_encoder`` and ``attributes`` stages."""
    root = stage_dir.parent
    return train_vae(stage_dir, config, root / "face_encoder", root / "attributes", progress=progress)


def refine_vae_decoder_stage(stage_dir: Path, config: DecoderRefinementConfig, progress: bool = True) -> dict:
    """The decoder refinement stage: the ``vae`` stage's encoder frozen, its decoder trained further with the
    ``face_encoder`` and ``attributes`` stages as loss networks."""
    root = stage_dir.parent
    return refine_decoder(stage_dir, root / "vae", root / "face_encoder", root / "attributes", config, progress)


def build_latent_cache_stage(stage_dir: Path, config: LatentCacheConfig, progress: bool = True) -> dict:
    """The latent cache stage: training renders encoded by the ``vae`` stage (never committed: it is large and
    rebuilt from its config)."""
    started = time.perf_counter()
    build_latent_cache(stage_dir, stage_dir.parent / "vae", config, progress=progress)
    metrics = {"photos": config.size, "build_seconds": round(time.perf_counter() - started, 1)}
    (stage_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "training": asdict(config)}) + "\n")
    return metrics


def train_base_stage(stage_dir: Path, config: UnetTrainingConfig, progress: bool = True) -> dict:
    """The base model stage: the UNet and text encoder on the stages trained before it."""
    return train_unet(stage_dir, stage_dir.parent, config, progress=progress)


def train_adapter_stage(stage_dir: Path, config: AdapterTrainingConfig, progress: bool = True) -> dict:
    """An adapter stage: trained on the ``base`` and ``face_encoder`` stages beside it."""
    return train_adapter(stage_dir, stage_dir.parent, config, progress=progress)


_QUICK = {"steps": 2, "batch_size": 8}
_QUICK_EVAL = {"eval_identities": 4, "eval_photos": 2, "eval_images": 12}


def quick_config(config):
    """The same recipe shrunk to a two-step smoke run (for tests and for checking an installation)."""
    names = {f.name for f in dataclasses.fields(config)}
    changes = {k: v for k, v in {**_QUICK, **_QUICK_EVAL}.items() if k in names}
    if type(config) in (VaeTrainingConfig, DecoderRefinementConfig, UnetTrainingConfig):
        changes["batch_size"] = 2
    if "num_identities" in names and type(config) is FaceTrainingConfig:
        changes["num_identities"] = 8
    if type(config) is AdapterTrainingConfig:
        changes.update(batch_size=4, num_identities=4, photos_per_identity=2, eval_identities=4)
    if type(config) is LatentCacheConfig:
        changes.update(num_identities=4, photos_per_identity=2, chunk_size=4)
    if type(config) is UnetTrainingConfig:
        changes.update(eval_captions=4, eval_steps=2, eval_every=1)
    return dataclasses.replace(config, **changes)


def _is_finished(out: Path, stage: str) -> bool:
    return (out / stage / "metrics.json").is_file()


def check_dependencies(selected: Iterable[str], finished: Iterable[str]) -> None:
    """Refuse a selection with a stage whose inputs are neither finished nor selected."""
    selected, finished = list(selected), set(finished)
    problems = [
        f"{stage} needs {', '.join(missing)}"
        for stage in selected
        if (missing := [d for d in STAGE_TABLE[stage].inputs if d not in finished and d not in selected])
    ]
    if problems:
        raise ValueError(
            "stages cannot run without their inputs: " + "; ".join(problems) + " (add them to --only, or train them)"
        )


def _dependents(stage: str) -> set[str]:
    """Every stage that needs ``stage``, directly or through others."""
    found: set[str] = set()
    frontier = [stage]
    while frontier:
        current = frontier.pop()
        for other, stage_info in STAGE_TABLE.items():
            if current in stage_info.inputs and other not in found:
                found.add(other)
                frontier.append(other)
    return found


def ready_stages(pending: Iterable[str], finished: Iterable[str]) -> list[str]:
    """The pending stages whose inputs are all finished, those that unblock the most stages first (the long
    chain VAE/CLIP -> base -> adapters sets the total time), then in recipe order."""
    finished = set(finished)
    order = list(STAGE_TABLE)
    ready = [s for s in pending if all(d in finished for d in STAGE_TABLE[s].inputs)]
    return sorted(ready, key=lambda s: (-len(_dependents(s)), order.index(s)))


def _update_summary(path: Path, entries: dict) -> dict:
    """Merge ``entries`` into the summary file as it is now and return the result: another retrain process on the
    same folder may have written it since this one started, and its stages must not be lost."""
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(entries)
    atomic_write(path, json.dumps(summary, indent=2) + "\n")
    return summary


def _launch_stage(out: Path, stage: str, quick: bool, force: bool) -> subprocess.Popen:
    """One stage in its own process, one torch (and OpenMP) thread, output to ``OUT/logs/<stage>.log``."""
    (out / "logs").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "infinite_id.world.trainers.retrain", "--out", str(out), "--only", stage]
    command += ["--threads", "1", "--no-summary", "--no-progress"] + ["--quick"] * quick + ["--force"] * force
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with (out / "logs" / f"{stage}.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_parallel(
    out: Path,
    selected: list[str],
    jobs: int,
    quick: bool = False,
    force: bool = False,
    launch: Callable[[Path, str, bool, bool], subprocess.Popen] = _launch_stage,
    poll_seconds: float = 1.0,
) -> dict[str, float]:
    """Run ``selected`` with up to ``jobs`` stage processes at once, each after its dependencies.

    Returns ``{stage: wall seconds}`` of the stages run. A failed stage stops its dependents (the others run on);
    ``RuntimeError`` then lists the failures and their logs.
    """
    pending = [s for s in selected if force or not _is_finished(out, s)]
    finished = {s for s in STAGE_TABLE if _is_finished(out, s) and s not in pending}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: dict[str, int] = {}
    seconds: dict[str, float] = {}
    while pending or running:
        for stage in ready_stages(pending, finished)[: max(0, jobs - len(running))]:
            pending.remove(stage)
            running[stage] = (launch(out, stage, quick, force), time.perf_counter())
        if not running:  # everything left waits on a failed stage
            break
        time.sleep(poll_seconds)
        for stage, (process, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[stage]
            if code == 0 and _is_finished(out, stage):
                finished.add(stage)
                seconds[stage] = round(time.perf_counter() - started, 1)
            else:
                failed[stage] = code
    if failed or pending:
        lines = [f"{s} (exit code {c}; see {out / 'logs' / (s + '.log')})" for s, c in failed.items()]
        lines += [f"{s} (not started: an input failed)" for s in pending]
        raise RuntimeError("retrain stages failed:\n  " + "\n  ".join(lines))
    return seconds


def is_retrain_output(folder: Path) -> bool:
    """True when ``folder`` holds only what retrain writes (stage folders, their logs, the summary; the shipped
    weights' ``export.json`` too): it is resumed, never wiped."""
    own = {*STAGE_TABLE, "logs", SUMMARY_NAME, "export.json"}
    return all(entry.name in own or entry.name.startswith(".") for entry in folder.iterdir())


def retrain(
    out_dir: str | Path,
    only: list[str] | None = None,
    quick: bool = False,
    force: bool = False,
    progress: bool = True,
    jobs: int = 1,
    write_summary: bool = True,
) -> dict[str, dict]:
    """Run the stages (all, or ``only``) into ``out_dir``; return ``{stage: metrics}`` for every finished stage.

    ``jobs > 1`` runs stages in parallel processes (see :func:`run_parallel`).
    """
    out = Path(out_dir)
    selected = only or list(STAGE_TABLE)
    unknown = [s for s in selected if s not in STAGE_TABLE]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {list(STAGE_TABLE)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    selected = [s for s in STAGE_TABLE if s in selected]  # recipe order: every stage after its inputs
    from ...outputs import check_output_dir

    check_output_dir(
        out,
        what="--out",
        command="python -m infinite_id.world.trainers.retrain",
        is_own=is_retrain_output,
        overwrite=None,
    )
    out.mkdir(parents=True, exist_ok=True)
    check_dependencies(selected, [s for s in STAGE_TABLE if _is_finished(out, s)])
    summary_file = out / SUMMARY_NAME
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if jobs > 1:
        seconds = run_parallel(out, selected, jobs, quick=quick, force=force)
        for name in selected:
            metrics = json.loads((out / name / "metrics.json").read_text())["metrics"]
            timing = {"train_seconds": seconds[name]} if name in seconds else {}
            summary[name] = {**(summary.get(name, {}) if not timing else {}), **metrics, **timing}
        return _update_summary(summary_file, {name: summary[name] for name in selected})
    for name in selected:
        stage = STAGE_TABLE[name]
        stage_dir = out / name
        metrics_file = stage_dir / "metrics.json"
        if metrics_file.is_file() and not force:
            summary[name] = {**summary.get(name, {}), **json.loads(metrics_file.read_text())["metrics"]}
            continue
        config = quick_config(stage.training_config()) if quick else stage.training_config()
        started = time.perf_counter()
        metrics = stage.load_trainer()(stage_dir, config, progress=progress)
        summary[name] = {**metrics, "train_seconds": round(time.perf_counter() - started, 1)}
        if write_summary:
            summary = _update_summary(summary_file, {name: summary[name]})
    if write_summary:
        summary = _update_summary(summary_file, {name: summary[name] for name in selected if name in summary})
    return summary


def snapshot_unfinished(out_dir: str | Path) -> dict[str, int]:
    """``{stage: step}`` for each unfinished stage whose checkpoint was copied to its committed snapshot."""
    out = Path(out_dir)
    steps = {}
    for stage in STAGE_TABLE:
        if (out / stage).is_dir() and not _is_finished(out, stage):
            step = snapshot_checkpoint(out / stage)
            if step is not None:
                steps[stage] = step
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Retrain the miniature world's models from scratch.")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per stage)")
    parser.add_argument("--only", default="", help=f"comma-separated stages, from: {','.join(STAGE_TABLE)}")
    parser.add_argument("--quick", action="store_true", help="two steps per stage: a smoke run")
    parser.add_argument("--force", action="store_true", help="retrain stages that already have metrics")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (with --jobs: 1 per stage)")
    parser.add_argument("--jobs", type=int, default=1, help="stages run at once, one process each")
    parser.add_argument(
        "--snapshot", action="store_true", help="snapshot unfinished stages' checkpoints for committing, then exit"
    )
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # a --jobs child
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.snapshot:
        print(json.dumps(snapshot_unfinished(args.out)))
        return
    torch.set_num_threads(args.threads)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    summary = retrain(
        args.out,
        only,
        quick=args.quick,
        force=args.force,
        progress=not args.no_progress,
        jobs=args.jobs,
        write_summary=not args.no_summary,
    )
    print(json.dumps(summary, indent=2))


def __getattr__(name: str) -> object:
    """Deprecated views of :data:`~infinite_id.world.stages.STAGE_TABLE` (one release): ``STAGES`` (stage ->
    (trainer, config)) and ``DEPENDENCIES`` (stage -> inputs), the two tables of earlier releases."""
    import warnings

    if name == "STAGES":
        warnings.warn("retrain.STAGES is deprecated: use infinite_id.world.stages.STAGE_TABLE", DeprecationWarning, 2)
        return {n: (stage.load_trainer(), stage.training_config()) for n, stage in STAGE_TABLE.items()}
    if name == "DEPENDENCIES":
        warnings.warn("retrain.DEPENDENCIES is deprecated: use STAGE_TABLE's inputs", DeprecationWarning, 2)
        return {n: stage.inputs for n, stage in STAGE_TABLE.items() if stage.inputs}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
