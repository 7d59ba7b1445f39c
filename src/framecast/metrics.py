"""Frame prediction metrics, every one per horizon step ``t+1 .. t+K``.

Inputs are ``pred, target (B, T, C, H, W)`` with frames in [0, 1]; predictions are clipped to [0, 1] first.
Each ``*_per_clip`` function returns ``(B, T)``: one value per clip and horizon step. The reported
per-step value is its mean over clips (``(T,)``) and the reported average is the mean over steps of
that, which equals the mean over all (clip, step) pairs. :class:`MetricAccumulator` sums over
batches so a whole split is averaged exactly, never as a mean of batch means.

Conventions (``../SPEC``):
- ``mse_frame``: squared error summed over ``C x H x W`` of a frame, then averaged over frames and clips
  (the Moving MNIST literature's "MSE per frame": PredRNN, OpenSTL). ``mae_frame`` likewise with |error|.
- ``mse``: squared error averaged over sub-pixels (``mse_frame / (C*H*W)``).
- ``psnr``: ``10 log10(1 / mse)`` of each frame (data range 1), then averaged; a perfect frame has
  ``inf`` PSNR, which :class:`MetricAccumulator` reports as ``inf`` (never a huge finite number).
- ``ssim``: Wang et al. 2004 with a Gaussian window of size 11, sigma 1.5, data range 1 (C1 = 0.01^2,
  C2 = 0.03^2), 'valid' windows only (no padding), averaged over the window positions and channels of
  each frame, then averaged over frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must both be (B, T, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    return pred.float().clamp(0, 1), target.float()


def mse_frame_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    return (pred - target).pow(2).sum(dim=(2, 3, 4))


def mae_frame_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    return (pred - target).abs().sum(dim=(2, 3, 4))


def mse_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    return (pred - target).pow(2).mean(dim=(2, 3, 4))


def psnr_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    mse = mse_per_clip(pred, target).double()
    return (10 * torch.log10(1.0 / mse)).float()  # mse == 0 gives +inf


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> Tensor:
    """The normalized 1-D Gaussian ``(size,)`` used by SSIM."""
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def ssim_map(x: Tensor, y: Tensor, size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Local SSIM of images ``x, y (N, C, H, W)`` -> ``(N, C, H - size + 1, W - size + 1)``.

    Frames smaller than the window use a window as large as the frame.
    """
    c = x.shape[1]
    size = min(size, x.shape[-1], x.shape[-2])
    g = gaussian_window(size, sigma, x.device, x.dtype)
    wx = g.view(1, 1, 1, -1).expand(c, 1, 1, size)
    wy = g.view(1, 1, -1, 1).expand(c, 1, size, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    b, t = pred.shape[:2]
    m = ssim_map(pred.flatten(0, 1).double(), target.flatten(0, 1).double())
    return m.mean(dim=(1, 2, 3)).view(b, t).float()


PIXEL_METRICS = {
    "mse_frame": mse_frame_per_clip,
    "mae_frame": mae_frame_per_clip,
    "mse": mse_per_clip,
    "psnr": psnr_per_clip,
    "ssim": ssim_per_clip,
}


def per_step(name: str, pred: Tensor, target: Tensor) -> Tensor:
    """Metric ``name`` per horizon step ``(T,)``, averaged over the clips of the batch."""
    return PIXEL_METRICS[name](pred, target).mean(0)


class MetricAccumulator:
    """Exact per-step averages of ``(B, T)`` metric values over any number of batches.

    ``add(name, values)`` with ``values (B, T)``; ``per_step(name) -> (T,)``; ``mean(name) -> float``.
    """

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, values: Tensor) -> None:
        values = values.detach().double().cpu()
        s = values.sum(0)
        self.sums[name] = self.sums[name] + s if name in self.sums else s
        self.counts[name] = self.counts.get(name, 0) + values.shape[0]

    def add_pixel_metrics(self, pred: Tensor, target: Tensor, names=tuple(PIXEL_METRICS)) -> None:
        for name in names:
            self.add(name, PIXEL_METRICS[name](pred, target))

    def per_step(self, name: str) -> Tensor:
        return self.sums[name] / self.counts[name]

    def mean(self, name: str) -> float:
        v = self.per_step(name)
        return math.inf if torch.isinf(v).any() else float(v.mean())

    def names(self) -> list[str]:
        return list(self.sums)
