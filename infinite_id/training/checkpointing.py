"""Checkpoints that survive a kill: written to a temporary folder and renamed into place only when complete.

``OUTPUT/checkpoints/step-00001000/`` holds accelerate's state (optimizer, LR scheduler, RNG states, gradient
scaler, EMA, the accumulation counter; the trainable weights as ``trainable.safetensors`` through a save hook,
never the frozen base model) and ``trainer_state.json`` (step, epoch, position in the epoch), written last. A
kill during a save leaves ``.tmp-step-...``, which is ignored and cleaned up; the previous checkpoint is only
deleted after the new one is in place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import MissingInputError, OutputPathError
from ..outputs import atomic_write, fsync_path

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8,})$")

__all__ = ["STATE_FILE", "find_resume_checkpoint", "list_checkpoints", "read_trainer_state", "save_checkpoint"]


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root`` (oldest first)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        match = _NAME.match(p.name)
        if match and (p / STATE_FILE).is_file():
            found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found)]


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise MissingInputError(f"{checkpoint} is not a complete checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def find_resume_checkpoint(output_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from, per ``output.resume`` (see the config reference)."""
    root = Path(output_dir) / "checkpoints"
    existing = list_checkpoints(root)
    if resume is None:
        if existing:
            raise OutputPathError(
                f"{root} already holds checkpoints (newest {existing[-1].name}); resume with output.resume=auto, "
                "or choose another output.dir"
            )
        return None
    if resume in ("auto", "latest"):
        if not existing and resume == "latest":
            raise MissingInputError(f"output.resume=latest but {root} holds no complete checkpoint")
        return existing[-1] if existing else None
    path = Path(resume)
    read_trainer_state(path)  # raises when incomplete
    return path


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2), fsync=True)


def save_checkpoint(accelerator, root: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save accelerate's state plus ``state`` as ``root/step-{step}``, atomically; keep the newest ``keep``.

    Every process must call this (sharded optimizers save their own parts); ``root`` must be on a file system
    all processes share.
    """
    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    exists = (final / STATE_FILE).is_file()
    if accelerator.is_main_process and not exists:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()  # before any process writes its RNG state into it
    accelerator.wait_for_everyone()
    if exists:
        return final
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json_atomic(tmp / STATE_FILE, state)
        fsync_path(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(root)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final
