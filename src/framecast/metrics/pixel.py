"""Pixel metrics per clip and horizon step: ``fn(pred, target) -> (B, T)``.

Inputs are ``pred, target (B, T, C, H, W)`` with frames in [0, 1]; predictions are clipped to [0, 1] first.
Sums are taken in float64 (float32 on MPS, which has no float64); results are float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from framecast.metrics.registry import register_metric

PSNR_MAX_DB = 100.0  # the PSNR of a perfect frame (mse floored at 1e-10)


def wide(t: Tensor) -> Tensor:
    """float64 where the device has it (not MPS), else float32."""
    return t.float() if t.device.type == "mps" else t.double()


def check(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(clipped pred, target)`` in wide precision; both must be ``(B, T, C, H, W)`` of one shape."""
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must both be (B, T, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    return wide(pred).clamp(0, 1), wide(target)


def _squared_error_sum(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = check(pred, target)
    return (pred - target).pow(2).sum(dim=(2, 3, 4))


LITERATURE_MSE = "PredRNN (NeurIPS 2017), PredRNN-v2 (TPAMI 2022) and OpenSTL (NeurIPS 2023) Moving MNIST tables"


@register_metric("mse_frame", better="lower", unit="squared error per frame",
                 definition="squared error summed over the C x H x W sub-pixels of a frame (frames in [0, 1]), "
                            "averaged over frames and clips",
                 tables=LITERATURE_MSE)
def mse_frame(pred: Tensor, target: Tensor) -> Tensor:
    return _squared_error_sum(pred, target).float()


@register_metric("mae_frame", better="lower", unit="absolute error per frame",
                 definition="absolute error summed over the C x H x W sub-pixels of a frame (frames in [0, 1]), "
                            "averaged over frames and clips",
                 tables=LITERATURE_MSE)
def mae_frame(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = check(pred, target)
    return (pred - target).abs().sum(dim=(2, 3, 4)).float()


@register_metric("mse", better="lower", unit="squared error per sub-pixel",
                 definition="squared error averaged over the sub-pixels of a frame (mse_frame / (C*H*W))",
                 tables="OpenSTL's 'MSE' on KTH/Human3.6M-style tables reports per-frame sums; this is the mean")
def mse(pred: Tensor, target: Tensor) -> Tensor:
    return (_squared_error_sum(pred, target) / pred[0, 0].numel()).float()


@register_metric("psnr", better="higher", unit="dB",
                 definition=f"10 log10(1 / mse) of each frame (data range 1), mse floored at 1e-10 so a perfect "
                            f"frame scores {PSNR_MAX_DB:g} dB, then averaged over frames and clips",
                 tables="per-frame PSNR as in PredRNN-v2 and OpenSTL (they report inf for a perfect frame)")
def psnr(pred: Tensor, target: Tensor) -> Tensor:
    m = (_squared_error_sum(pred, target) / pred[0, 0].numel()).clamp(min=10 ** (-PSNR_MAX_DB / 10))
    return (10 * torch.log10(1.0 / m)).float()
