"""Where the miniature world's trained weights live, and how a training run becomes the shipped weights.

The shipped weights (``DEFAULT_WEIGHTS_DIR``) have the layout of the retrain command's output, one folder per
stage, without what only training needs (checkpoints, logs, caches, the separate ``vae`` stage: ``base/vae``
holds the same VAE).

    python -m infinite_id.world.models.weights export --from /work/wtrain --to infinite_id/world/weights
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from ...outputs import check_output_dir, new_temp_dir, replace_dir
from ..stages import STAGE_TABLE

DEFAULT_WEIGHTS_DIR = Path(__file__).parents[1] / "weights"  # infinite_id/world/weights

#: shipped stage -> files that must be there for the stage to be usable (from the one table of stages)
STAGE_FILES: dict[str, tuple[str, ...]] = {name: stage.files for name, stage in STAGE_TABLE.items() if stage.files}
WEIGHT_STAGES: tuple[str, ...] = tuple(STAGE_FILES)

RETRAIN_COMMAND = "python -m infinite_id.world.trainers.retrain --out {out}"
# What a stage folder of a training run may hold that is not part of the weights.
_SKIPPED_NAMES = {"checkpoint.safetensors", "best.safetensors"}
_SKIPPED_PREFIXES = ("partial-",)  # committed snapshots of unfinished training (train_utils.snapshot_checkpoint)
_SKIPPED_DIRS = {"run", "cache", "data", "checkpoints", "logs", "validation"}
_KEPT_SUFFIXES = {".json", ".safetensors", ".txt"}


def _check_stages(stages: Iterable[str] | None) -> list[str]:
    selected = list(WEIGHT_STAGES if stages is None else stages)
    unknown = [s for s in selected if s not in STAGE_FILES]
    if unknown:
        raise ValueError(f"unknown weight stages {unknown}; choose from {list(WEIGHT_STAGES)}")
    return selected


def missing_stages(path: str | Path, stages: Iterable[str] | None = None) -> list[str]:
    """The stages of ``stages`` (default: all) whose folder under ``path`` lacks one of its required files."""
    root = Path(path)
    return [s for s in _check_stages(stages) if not all((root / s / f).is_file() for f in STAGE_FILES[s])]


def resolve_weights_dir(path: str | Path | None = None, stages: Iterable[str] | None = None) -> Path:
    """The weights folder to use (``None``: the shipped weights), checked to hold ``stages`` (default: all).

    Raises ``FileNotFoundError`` naming the missing stage folders and the command that trains them.
    """
    root = Path(path) if path is not None else DEFAULT_WEIGHTS_DIR
    missing = missing_stages(root, stages)
    if missing:
        where = "the shipped weights folder" if path is None else "the weights folder"
        command = RETRAIN_COMMAND.format(out=root) + f" --only {','.join(missing)}"
        raise FileNotFoundError(
            f"{where} {root} lacks the stage folder(s) {', '.join(m + '/' for m in missing)} "
            f"(or their files). Train them with:\n    {command}"
            + ("" if path is not None else "\nor pass the folder of a retrain run.")
        )
    return root


def shipped_weights_available(stages: Iterable[str] | None = None) -> bool:
    """Whether the shipped weights folder holds ``stages`` (default: every stage)."""
    return not missing_stages(DEFAULT_WEIGHTS_DIR, stages)


def _weight_files(stage_dir: Path) -> list[Path]:
    """The files of a finished stage folder that belong in the weights, relative to it."""
    files = []
    for file in sorted(stage_dir.rglob("*")):
        relative = file.relative_to(stage_dir)
        if not file.is_file() or file.name in _SKIPPED_NAMES or file.name.startswith(_SKIPPED_PREFIXES):
            continue
        if file.suffix not in _KEPT_SUFFIXES:
            continue
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        files.append(relative)
    return files


def is_weights_dir(folder: Path) -> bool:
    """True for a weights folder written by :func:`export_weights` (its ``export.json``): the only kind it replaces."""
    return (folder / "export.json").is_file()


def export_weights(train_out: str | Path, dest: str | Path, stages: Iterable[str] | None = None) -> dict[str, list]:
    """Copy the finished stages (those with ``metrics.json``) of a retrain run into ``dest``.

    Only weights, configs, tokenizer files and metrics are copied. The new folder is assembled next to ``dest``
    and renamed into place, so ``dest`` is never half-written; an existing ``dest`` is replaced only when it is an
    earlier export (any other non-empty folder, or one holding ``train_out``, is refused). Returns
    ``{"exported": [...], "missing": [...]}``. Raises ``FileNotFoundError`` when no stage is finished.
    """
    source, dest = Path(train_out), Path(dest)
    selected = _check_stages(stages)
    finished = [s for s in selected if (source / s / "metrics.json").is_file() and not missing_stages(source, [s])]
    if not finished:
        raise FileNotFoundError(f"{source} holds no finished stage of {selected} (a stage folder with metrics.json)")
    check_output_dir(dest, what="--to", command="python -m infinite_id.world.models.weights export",
                     is_own=is_weights_dir, inputs=[source], overwrite=True)  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_dir(dest)
    try:
        for stage in finished:
            for relative in _weight_files(source / stage):
                target = tmp / stage / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / stage / relative, target)
        summary = source / "metrics.json"  # the retrain command's summary: every stage's metrics and time
        if summary.is_file():
            shutil.copy2(summary, tmp / "metrics.json")
        report = {"exported": finished, "missing": [s for s in selected if s not in finished]}
        (tmp / "export.json").write_text(json.dumps({"source": str(source.resolve()), **report}, indent=2) + "\n")
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The miniature world's weights.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="copy a retrain run's finished stages into a weights folder")
    export.add_argument("--from", dest="source", required=True, help="retrain output folder")
    export.add_argument("--to", dest="dest", default=str(DEFAULT_WEIGHTS_DIR), help="weights folder (replaced)")
    export.add_argument("--only", default="", help=f"comma-separated stages, from: {','.join(WEIGHT_STAGES)}")
    check = commands.add_parser("check", help="say which stages a weights folder lacks")
    check.add_argument("--dir", default=None, help="weights folder (default: the shipped one)")
    args = parser.parse_args(argv)
    if args.command == "export":
        only = [s.strip() for s in args.only.split(",") if s.strip()] or None
        print(json.dumps(export_weights(args.source, args.dest, only), indent=2))
    else:
        root = Path(args.dir) if args.dir else DEFAULT_WEIGHTS_DIR
        missing = missing_stages(root)
        print(json.dumps({"dir": str(root), "missing": missing}, indent=2))
        if missing:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
