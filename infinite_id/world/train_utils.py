"""Shared pieces of the miniature world's training scripts: a resumable schedule and safetensors checkpoints.

Every script renders its batches as a pure function of ``(seed, step)`` and sets the learning rate from the
step, so a checkpoint needs only the weights and the step: a resumed run sees the data it would have seen.
(Optimizer moments restart from zero after a resume, which costs a few steps of warm-up, not correctness.)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


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
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"step": str(step)})
    tmp.replace(path)


def load_checkpoint(path: Path, modules: dict[str, nn.Module]) -> int:
    """Load a checkpoint written by :func:`save_checkpoint` into ``modules``; return its step."""
    state = load_file(str(path))
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
