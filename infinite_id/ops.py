"""The Infinite-ID attention math, as plain functions on ``(batch, heads, tokens, head_dim)`` tensors.

Read this file against the paper (arXiv 2403.11781, section 3.3 and Fig. 3):

* **Mixed attention** (Fig. 3a). The identity stream's queries attend over its own keys/values
  concatenated, on the token axis, with the text stream's keys/values of the same layer and step::

      K = [K_id ; K_t],   V = [V_id ; V_t],   MixAttn = softmax(Q_id K^T / sqrt(d)) V

* **AdaIN-mean** (Fig. 3b). Before the concatenation, the identity keys and values are shifted to the
  text stream's per-channel mean, which carries the prompt's style::

      AdaIN-m(x, y) = x - mu(x) + mu(y)

  ``mu`` is the mean over the token axis, per batch element and per channel (channel = head x head_dim).

Two ablation baselines live here as well so that every variant is in one place: ``adain`` (full AdaIN, which
also matches the standard deviation; the paper reports it costs identity) and ``mutual_attention``
(MasaCtrl-style: the identity queries see *only* the text stream's keys/values).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .controls import check_applied_adain

AdaINMode = Literal["mean", "full"]

__all__ = ["AdaINMode", "adain", "adain_mean", "mixed_attention", "mutual_attention"]


def _token_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch element, per head-channel mean and std over the token axis (dim -2), in float32."""
    x32 = x.float()
    return x32.mean(dim=-2, keepdim=True), x32.std(dim=-2, keepdim=True, unbiased=False)


def adain_mean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """AdaIN-mean: ``x - mean(x) + mean(y)``; the mean is over tokens, per batch element and channel.

    ``x`` and ``y`` are ``(batch, heads, tokens, head_dim)``; their token counts may differ. Computed in
    float32 (fp16 means of thousands of tokens lose precision) and returned in ``x``'s dtype.
    """
    _check_4d(x=x, y=y)
    x32 = x.float()
    shifted = x32 - x32.mean(dim=-2, keepdim=True) + y.float().mean(dim=-2, keepdim=True)
    return shifted.to(x.dtype)


def adain(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Full AdaIN: normalise ``x`` per channel and give it ``y``'s mean and std (ablation of AdaIN-mean)."""
    _check_4d(x=x, y=y)
    mu_x, sd_x = _token_stats(x)
    mu_y, sd_y = _token_stats(y)
    return ((x.float() - mu_x) / (sd_x + eps) * sd_y + mu_y).to(x.dtype)


def mixed_attention(
    q: torch.Tensor,
    k_id: torch.Tensor,
    v_id: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    adain: bool | Literal["off", "mean", "full"] = "off",
) -> torch.Tensor:
    """Mixed attention of the identity stream: ``softmax(q [k_id; k_t]^T / sqrt(d)) [v_id; v_t]``.

    All inputs are ``(batch, heads, tokens, head_dim)``; ``q``/``k_id``/``v_id`` come from the identity stream
    and ``k_t``/``v_t`` from the text stream at the same layer and step (matching batch rows). With ``adain``
    ``"mean"`` (or ``True``), ``k_id``/``v_id`` are first moved to the text stream's mean by :func:`adain_mean`;
    ``"full"`` uses full AdaIN instead (ablation); ``"off"`` (or ``False``) neither (the spellings of
    :mod:`infinite_id.controls`). Returns ``(batch, heads, q_tokens, head_dim)``.
    """
    _check_4d(q=q, k_id=k_id, v_id=v_id, k_t=k_t, v_t=v_t)
    mode = check_applied_adain(adain)
    if mode == "mean":
        k_id, v_id = adain_mean(k_id, k_t), adain_mean(v_id, v_t)
    elif mode == "full":
        k_id, v_id = _full_adain(k_id, k_t), _full_adain(v_id, v_t)
    key = torch.cat([k_id, k_t], dim=-2)
    value = torch.cat([v_id, v_t], dim=-2)
    return F.scaled_dot_product_attention(q, key, value)


def mutual_attention(q: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """MasaCtrl-style mutual self-attention (ablation): identity queries over the text stream's keys/values only."""
    _check_4d(q=q, k_t=k_t, v_t=v_t)
    return F.scaled_dot_product_attention(q, k_t, v_t)


_full_adain = adain  # the public name ``adain`` is shadowed by mixed_attention's argument


def _check_4d(**tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.ndim != 4:
            raise ValueError(f"{name} must be (batch, heads, tokens, head_dim), got shape {tuple(t.shape)}")
