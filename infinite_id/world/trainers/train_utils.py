"""Shared pieces of the miniature world's trainers: a resumable schedule, safetensors checkpoints, and the opening,
ending and command line that every trainer has (:func:`stage_folder`, :func:`train_evaluate_save`,
:func:`write_stage_metrics`, :func:`training_command`).

Every script renders its batches as a pure function of ``(seed, step)`` and sets the learning rate from the
step, so a checkpoint needs only the weights and the step: a resumed run sees the data it would have seen.
(Optimizer moments restart from zero after a resume, which costs a few steps of warm-up, not correctness.)

The checkpoint is git-ignored working state. A working folder does not always survive from one session to the
next, so :func:`snapshot_checkpoint` copies it (and ``best.safetensors``) to ``partial-*`` files to be committed at
the end of a session; a run resumes from the checkpoint, else from that snapshot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ...outputs import atomic_write

METRICS_NAME = "metrics.json"  # a finished stage's held-out metrics and the config that trained it
CHECKPOINT_NAME = "checkpoint.safetensors"
BEST_NAME = "best.safetensors"  # a trainer's best-so-far weights (early stopping), kept beside the checkpoint


def cosine_learning_rate(base_lr: float, total_steps: int, step: int, warmup_fraction: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


def save_checkpoint(path: Path, modules: dict[str, nn.Module], step: int) -> None:
    """Write ``{name}.{param}`` tensors and the step, atomically (temporary file, then rename)."""
    state = {}
    for name, module in modules.items():
        state.update({f"{name}.{k}": v.detach().contiguous() for k, v in module.state_dict().items()})
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"step": str(step)}))


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint written by :func:`save_checkpoint` was saved at (read from its header only)."""
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


def load_checkpoint(path: Path, modules: dict[str, nn.Module]) -> int:
    """Load a checkpoint written by :func:`save_checkpoint` into ``modules``; return its step."""
    state = load_file(str(path))
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return checkpoint_step(path)


def snapshot_name(name: str) -> str:
    """The committed copy of the git-ignored working file ``name``."""
    return "partial-" + name


def snapshot_checkpoint(out_dir: Path, names: tuple[str, ...] = (CHECKPOINT_NAME, BEST_NAME)) -> int | None:
    """Copy ``out_dir``'s working files ``names`` (those present) to their snapshots, atomically; return the
    checkpoint's step, or None (and copy nothing) without a checkpoint."""
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    if not checkpoint.is_file():
        return None
    step = checkpoint_step(checkpoint)
    for name in names:
        if (out_dir / name).is_file():
            atomic_write(out_dir / snapshot_name(name), (out_dir / name).read_bytes())
    return step


def working_file(out_dir: Path, name: str) -> Path | None:
    """``out_dir/name``, else its committed snapshot, else None: where a resumed run reads its working state."""
    for candidate in (name, snapshot_name(name)):
        if (Path(out_dir) / candidate).is_file():
            return Path(out_dir) / candidate
    return None


def remove_working_files(out_dir: Path, names: tuple[str, ...] = (CHECKPOINT_NAME,)) -> None:
    """Remove the working files ``names`` and their snapshots (a finished stage needs neither)."""
    for name in names:
        for candidate in (name, snapshot_name(name)):
            (Path(out_dir) / candidate).unlink(missing_ok=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times the group's ``lr_scale`` (1 by default)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def train_loop(
    out_dir: Path,
    modules: dict[str, nn.Module],
    step_loss: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    param_groups: list[dict] | None = None,
    weight_decay: float = 0.0,
    checkpoint_every: int = 250,
    max_grad_norm: float | None = 1.0,
    after_step: Callable[[], None] | None = None,
    stop_after: Callable[[int], bool] | None = None,
    desc: str = "training",
    progress: bool = True,
) -> int:
    """AdamW over ``modules`` with a cosine schedule, resuming from its checkpoint or that one's snapshot.

    ``step_loss(step)`` renders the step's batch and returns its loss; it must depend on the step only, which makes
    a resumed run identical in data to an uninterrupted one. ``stop_after(n)``, called once ``n`` steps are done,
    may end training early by returning True. The checkpoint and its snapshot are removed when the loop finishes.
    Returns the number of steps done.
    """
    params = [p for m in modules.values() for p in m.parameters()]
    groups = param_groups or [{"params": params, "weight_decay": weight_decay}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    checkpoint = Path(out_dir) / CHECKPOINT_NAME
    source = working_file(out_dir, CHECKPOINT_NAME)
    start = load_checkpoint(source, modules) if source is not None else 0
    for module in modules.values():
        module.train()
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
    done = start
    if stop_after is not None and start and stop_after(start):
        bar.close()
        remove_working_files(out_dir)
        return done
    for step in bar:
        set_learning_rate(optimizer, cosine_learning_rate(lr, steps, step))
        loss = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if stop_after is not None and stop_after(done):
            break
        if done % checkpoint_every == 0 and done < steps:
            save_checkpoint(checkpoint, modules, done)
    bar.close()
    remove_working_files(out_dir)
    return done


def parse_training_args(
    config_cls: type,
    description: str,
    argv: list[str] | None = None,
    out_help: str = "output folder",
    paths: tuple[tuple[str, str], ...] = (),
) -> tuple[argparse.Namespace, object]:
    """The command line every mini-model trainer shares: ``--out``, required input folders named in ``paths``
    (``(name, help)``), one option per numeric field of ``config_cls`` (nested configs keep their defaults) and
    ``--threads``. Sets torch's thread count and returns ``(args, config)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, help=out_help)
    for name, help_text in paths:
        parser.add_argument(f"--{name}", required=True, help=help_text)
    defaults = config_cls()
    names = [
        f.name
        for f in dataclasses.fields(config_cls)
        if isinstance(getattr(defaults, f.name), (int, float)) and not isinstance(getattr(defaults, f.name), bool)
    ]
    for name in names:
        kind = float if isinstance(getattr(defaults, name), float) else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args, config_cls(**{name: getattr(args, name) for name in names})


def stage_folder(out_dir: str | Path, seed: int) -> Path:
    """The opening of every trainer: its stage folder (created) and torch's seed, before any model is built."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return out


def write_stage_metrics(out: Path, metrics: dict, config: Any, nested: dict[str, dict] | None = None) -> dict:
    """Write ``metrics.json`` (the metrics, and the config as ``training``, with ``nested`` replacing the nested
    configs' fields, e.g. by a model config's saved form) and return the metrics: its presence marks a stage done."""
    training = {**dataclasses.asdict(config), **(nested or {})}
    (out / METRICS_NAME).write_text(json.dumps({"metrics": metrics, "training": training}, indent=2) + "\n")
    return metrics


def train_evaluate_save(
    out: Path,
    config: Any,
    modules: dict[str, nn.Module],
    step_loss: Callable[[int], torch.Tensor],
    evaluate: Callable[[], dict],
    save: Callable[[Path], None],
    nested: dict[str, dict] | None = None,
    progress: bool = True,
    **loop_options: Any,
) -> dict:
    """The ending every mini-model trainer shares: :func:`train_loop` for ``config.steps`` at ``config.lr``, then
    ``evaluate()`` (which may finish the model first, as the VAE's latent scaling does), ``save(out)`` and
    ``metrics.json``. Returns the metrics."""
    train_loop(
        out,
        modules,
        step_loss,
        config.steps,
        config.lr,
        checkpoint_every=config.checkpoint_every,
        progress=progress,
        **loop_options,
    )
    metrics = evaluate()
    save(out)
    return write_stage_metrics(out, metrics, config, nested)


def training_command(
    train: Callable[[argparse.Namespace, Any], dict],
    config_cls: type,
    description: str,
    argv: list[str] | None = None,
    out_help: str = "output folder",
    paths: tuple[tuple[str, str], ...] = (),
) -> None:
    """A trainer's command line: :func:`parse_training_args`, then ``train(args, config)``, its metrics printed."""
    args, config = parse_training_args(config_cls, description, argv, out_help=out_help, paths=paths)
    print(json.dumps(train(args, config), indent=2))
