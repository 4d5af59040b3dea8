"""Sampling arithmetic of the pipelines as plain functions: where a UNet call is in the denoising (for the step
windows), and classifier-free guidance with its rescale.

Schedulers differ in how many UNet calls a step takes: DDIM, Euler or DPM-Solver make one, Heun and KDPM2 two
(``2n - 1`` for ``n`` steps), PNDM one more for its first step (and three more per step in its Runge-Kutta
warm-up). A window counted in calls would switch the identity off partway for them; counted in the scheduler's
own noise levels (its timesteps), it covers the same part of the denoising on every scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import torch

from .errors import UserInputError

__all__ = [
    "FAST_PRESET",
    "TEXT_STREAM_MODES",
    "TextStreamMode",
    "call_progress",
    "check_text_stream",
    "classifier_free_guidance",
    "text_stream_calls",
    "window_active",
]


def call_progress(timesteps: torch.Tensor | list[float]) -> list[float]:
    """How far each UNet call of a run is through the denoising, in ``[0, 1)``.

    A call's progress is the rank of its timestep among the run's distinct timesteps (in the order the scheduler
    uses them) divided by their number. With one call per step this is ``step / num_steps``; the extra calls of
    multi-call schedulers (Heun's and PNDM's repeated timesteps, KDPM2's interpolated ones) take the place of the
    noise level they evaluate, so a window covers the same noise levels on every scheduler.
    """
    values = timesteps.tolist() if isinstance(timesteps, torch.Tensor) else list(timesteps)
    ranks: dict[float, int] = {}
    order = [ranks.setdefault(float(t), len(ranks)) for t in values]
    return [rank / len(ranks) for rank in order]


def window_active(window: tuple[float, float], progress: float) -> bool:
    """``start <= progress < end``: is a ``(start, end)`` window (fractions of the denoising) open at ``progress``."""
    start, end = window
    return start <= progress < end


def classifier_free_guidance(
    uncond: torch.Tensor, cond: torch.Tensor, scale: float, rescale: float = 0.0
) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)``, optionally rescaled towards the conditional prediction's spread.

    ``rescale`` (0..1) is guidance rescale from "Common Diffusion Noise Schedules and Sample Steps are Flawed"
    (Lin et al. 2023, section 3.4): the guided prediction is scaled to the per-sample standard deviation of
    ``cond`` and mixed with the unscaled one by ``rescale``; it counters over-exposure at high guidance.
    """
    guided = uncond + scale * (cond - uncond)
    if rescale <= 0.0:
        return guided
    dims = list(range(1, cond.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return rescale * (guided * ratio) + (1.0 - rescale) * guided


TextStreamMode = Literal["exact", "window"]
TEXT_STREAM_MODES: tuple[str, ...] = ("exact", "window")


def check_text_stream(mode: str, return_text_stream: bool) -> TextStreamMode:
    """The one validation of the ``text_stream`` control (the pipeline, the CLI and the evaluation read it here).

    ``"exact"`` (the default) runs the text stream through every step; ``"window"`` stops it once the mixed-attention
    window has closed for good, which needs its image not to be wanted.
    """
    if mode not in TEXT_STREAM_MODES:
        raise UserInputError(f"text_stream must be one of {', '.join(TEXT_STREAM_MODES)}, got {mode!r}")
    if mode == "window" and return_text_stream:
        raise UserInputError(
            "text_stream='window' stops the text stream when the mixed-attention window closes, so it cannot also "
            "be returned: pass return_text_stream=False or text_stream='exact'"
        )
    return mode  # type: ignore[return-value]


def text_stream_calls(progress: list[float], window: tuple[float, float], mode: TextStreamMode) -> int:
    """How many leading UNet calls of a run need the text stream: all of them in ``"exact"`` mode; in ``"window"``
    mode the calls up to the last one at which the mixed-attention window is open.

    After that call the identity rows' self-attention is plain self-attention, and every other layer of the UNet
    treats batch rows independently, so the text rows no longer reach the identity stream and can be left out of
    the batch: the identity stream's result is the exact mode's, at the cost of one stream (half the rows).
    """
    if mode == "exact":
        return len(progress)
    open_at = [i for i, p in enumerate(progress) if window_active(window, p)]
    return open_at[-1] + 1 if open_at else 0


FAST_PRESET: Mapping[str, Any] = MappingProxyType({"text_stream": "window", "mixed_attention_window": (0.0, 0.2)})
"""The fast preset: mixed attention over the first fifth of the denoising, the text stream stopped after it. Its
step costs 1.27x the plain pipeline's in SDXL FLOPs (0.2 x 2.15 + 0.8 x 1.04) against 2.15x for the exact mode;
its price in quality is measured in BENCHMARKS.md ("Fast mode"). Pass it as ``pipe(..., **FAST_PRESET)``."""
