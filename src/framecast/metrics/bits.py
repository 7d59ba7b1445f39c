"""Codelength per clip and horizon step: ``bits_per_pixel(pred, target, head=..., params=... | scales=...)``.

The codelength of the true 8-bit frames (snapped to the levels ``k / 255``) in bits per sub-pixel
(``C*H*W`` values per frame). A model with a per-pixel distribution (``head: logistic_mixture``) codes with
it (:func:`mixture_bits_per_clip`); a deterministic model or a baseline is given a discretized Laplace around
its clipped prediction with one scale per horizon step, fitted by maximum likelihood on data that is never
scored (:func:`laplace_bits_per_clip`, :mod:`framecast.codelength`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from framecast.metrics.pixel import check, wide
from framecast.metrics.registry import register_metric


def bits_per_pixel_per_clip(bits: Tensor) -> Tensor:
    """Per-sub-pixel codelengths ``(B, T, C, H, W)`` -> bits per sub-pixel of each frame ``(B, T)``."""
    if bits.dim() != 5:
        raise ValueError(f"bits must be (B, T, C, H, W), got {tuple(bits.shape)}")
    return wide(bits).mean(dim=(2, 3, 4)).float()


def laplace_bits_per_clip(pred: Tensor, target: Tensor, scales: Tensor) -> Tensor:
    """``bits_per_pixel (B, T)`` of ``target`` under a discretized Laplace around the clipped ``pred`` with
    scale ``scales[t]`` at step ``t`` (fitted with :class:`framecast.codelength.LaplaceFit`)."""
    from framecast.codelength import laplace_bits

    check(pred, target)
    scales = torch.as_tensor(scales, dtype=torch.float64)
    if scales.shape != (pred.shape[1],):
        raise ValueError(f"need one Laplace scale per step ({pred.shape[1]}), got shape {tuple(scales.shape)}")
    return bits_per_pixel_per_clip(laplace_bits(pred.cpu(), target.cpu(), scales))


def mixture_bits_per_clip(head, params: Tensor, target: Tensor) -> Tensor:
    """``bits_per_pixel (B, T)`` of ``target (B, T, C, H, W)`` under a distribution head's ``params
    (B, T, P, H, W)`` (e.g. :class:`framecast.models.heads.LogisticMixtureHead`)."""
    return bits_per_pixel_per_clip(head.bits(params, target))


@register_metric("bits_per_pixel", better="lower", unit="bits per sub-pixel", needs="distribution",
                 definition="codelength of the true 8-bit frames under the model's per-pixel distribution, or a "
                            "discretized Laplace around a deterministic prediction with one scale per step fitted "
                            "by maximum likelihood on data that is not scored, in bits per sub-pixel, averaged "
                            "over frames and clips",
                 tables="framecast's own (no peer reports a codelength)")
def bits_per_pixel(pred: Tensor, target: Tensor, *, head=None, params: Tensor | None = None,
                   scales: Tensor | None = None) -> Tensor:
    if head is not None and params is not None:
        return mixture_bits_per_clip(head, params, target)
    if scales is not None:
        return laplace_bits_per_clip(pred, target, scales)
    raise ValueError("bits_per_pixel needs a distribution: the model's (head and params) or Laplace scales")
