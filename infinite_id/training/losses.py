"""Loss weighting for adapter training, as pure functions of tensors (no model, no data loader)."""

from __future__ import annotations

import torch


def box_coverage(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The fraction of each cell of a ``height`` x ``width`` grid covered by each box: ``(B, 1, H, W)``.

    ``boxes`` is ``(B, 4)``, (x0, y0, x1, y1) as fractions of the image; an all-zero box covers nothing. Exact
    area overlap, so a face smaller than a latent cell still gets its share of weight.
    """
    boxes = boxes.float()

    def overlap(lo: torch.Tensor, hi: torch.Tensor, cells: int) -> torch.Tensor:  # (B, cells)
        edges = torch.arange(cells + 1, device=boxes.device, dtype=torch.float32) / cells
        left, right = edges[:-1].unsqueeze(0), edges[1:].unsqueeze(0)
        return (torch.minimum(hi.unsqueeze(1), right) - torch.maximum(lo.unsqueeze(1), left)).clamp(min=0) * cells

    ys = overlap(boxes[:, 1], boxes[:, 3], height)
    xs = overlap(boxes[:, 0], boxes[:, 2], width)
    return (ys.unsqueeze(2) * xs.unsqueeze(1)).unsqueeze(1)


def face_weighted_mse(
    prediction: torch.Tensor, target: torch.Tensor, face_boxes: torch.Tensor | None, face_weight: float
) -> torch.Tensor:
    """Mean squared error with weight ``1 + face_weight * coverage`` per latent cell, divided by the mean
    weight of each sample (so the loss scale, and the learning rate that suits it, do not change with the
    weight or the face's size). ``face_weight = 0`` or no boxes: the plain MSE."""
    error = (prediction.float() - target.float()).pow(2)
    if not face_weight or face_boxes is None:
        return error.mean()
    weight = 1 + face_weight * box_coverage(face_boxes.to(error.device), error.shape[-2], error.shape[-1])
    per_sample = (weight * error).mean(dim=(1, 2, 3)) / weight.mean(dim=(1, 2, 3))
    return per_sample.mean()


def predicted_clean_latents(
    noisy: torch.Tensor,
    prediction: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """The clean latents ``x0`` the model's prediction implies, in float32 (what an identity loss decodes).

    With ``a = alphas_cumprod[t]`` and ``z_t = sqrt(a) x0 + sqrt(1 - a) eps``: for ``epsilon``,
    ``x0 = (z_t - sqrt(1 - a) eps) / sqrt(a)``; for ``v_prediction`` (``v = sqrt(a) eps - sqrt(1 - a) x0``),
    ``x0 = sqrt(a) z_t - sqrt(1 - a) v``. The same as diffusers' ``DDPMScheduler.step(...).pred_original_sample``
    without its clipping, but batched over per-sample timesteps and differentiable in ``prediction``.
    """
    a = alphas_cumprod.to(noisy.device, torch.float32)[timesteps].reshape(-1, *([1] * (noisy.ndim - 1)))
    z, p = noisy.float(), prediction.float()
    if prediction_type == "epsilon":
        return (z - (1 - a).sqrt() * p) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * z - (1 - a).sqrt() * p
    raise ValueError(f"prediction_type must be epsilon or v_prediction, got {prediction_type!r}")


def has_face_box(face_boxes: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the boxes with an area (the data marks "no face" by an all-zero box)."""
    return (face_boxes[:, 2] > face_boxes[:, 0]) & (face_boxes[:, 3] > face_boxes[:, 1])


def identity_cosine_loss(embeddings: torch.Tensor, target_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cosine`` of matching rows (0 for an empty batch, never NaN); the targets are not differentiated."""
    if embeddings.shape[0] == 0:
        return embeddings.new_zeros((), dtype=torch.float32)
    cosine = torch.nn.functional.cosine_similarity(embeddings.float(), target_embeddings.detach().float(), dim=-1)
    return (1 - cosine).mean()
