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
