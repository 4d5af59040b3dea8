"""Sampling arithmetic of the pipelines as plain functions: where a UNet call is in the denoising (for the step
windows), and classifier-free guidance with its rescale.

Schedulers differ in how many UNet calls a step takes: DDIM, Euler or DPM-Solver make one, Heun and KDPM2 two
(``2n - 1`` for ``n`` steps), PNDM one more for its first step (and three more per step in its Runge-Kutta
warm-up). A window counted in calls would switch the identity off partway for them; counted in the scheduler's
own noise levels (its timesteps), it covers the same part of the denoising on every scheduler.
"""

from __future__ import annotations

import torch

__all__ = ["call_progress", "classifier_free_guidance", "window_active"]


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
