"""Structural similarity (Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility
to structural similarity", IEEE TIP 2004), per clip and horizon step: ``ssim(pred, target) -> (B, T)``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from framecast.metrics.pixel import check
from framecast.metrics.registry import register_metric


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> Tensor:
    """The normalized 1-D Gaussian ``(size,)`` used by SSIM."""
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def valid_blur_matrix(n: int, window: Tensor) -> Tensor:
    """``(n, n - size + 1)`` matrix ``M`` with ``(x @ M)[j] = sum_i window[i] x[j + i]``: a 'valid' 1-D filter."""
    size = len(window)
    j = torch.arange(n - size + 1, device=window.device)
    i = torch.arange(size, device=window.device)
    m = torch.zeros(n, n - size + 1, device=window.device, dtype=window.dtype)
    m[i[:, None] + j[None, :], j[None, :].expand(size, -1)] = window[:, None].expand(-1, len(j))
    return m


def in_float32(fn):
    """Run an SSIM map in float32, also under autocast. Its variances are differences of nearly equal blurred
    moments (``E[x^2] - E[x]^2``); autocast would run the blurs (matrix products) in bfloat16, whose 8-bit
    mantissa cancels them to noise or below zero (a ``1 - SSIM`` loss then reaches -inf under ``bf16-mixed``)."""

    @functools.wraps(fn)
    def wrapper(x: Tensor, y: Tensor, *args, **kwargs) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return fn(x.float(), y.float(), *args, **kwargs)

    return wrapper


@in_float32
def ssim_map(x: Tensor, y: Tensor, size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Local SSIM of images ``x, y (N, C, H, W)`` -> ``(N, C, H - size + 1, W - size + 1)``.

    Frames smaller than the window use a window as large as the frame. The separable Gaussian filter is
    applied as two matrix products (much faster than a grouped convolution on CPU, the same numbers), in
    float32 whatever the input's dtype or autocast (:func:`in_float32`).
    """
    size = min(size, x.shape[-1], x.shape[-2])
    g = gaussian_window(size, sigma, x.device, x.dtype)
    mw = valid_blur_matrix(x.shape[-1], g)
    mh = valid_blur_matrix(x.shape[-2], g).T

    def blur(t: Tensor) -> Tensor:
        return mh @ (t @ mw)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


@register_metric("ssim", better="higher", unit="",
                 definition="canonical SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, data range 1 "
                            "(C1 = 0.01^2, C2 = 0.03^2), population covariance, 'valid' windows only, averaged "
                            "over window positions and channels of each frame, then over frames and clips",
                 tables="the canonical definition (e.g. torchmetrics, pytorch-msssim); not PredRNN's or "
                        "OpenSTL's scikit-image calls")
def ssim(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = check(pred, target)
    b, t = pred.shape[:2]
    m = ssim_map(pred.flatten(0, 1), target.flatten(0, 1))
    return m.mean(dim=(1, 2, 3)).view(b, t).float()


@in_float32
def uniform_ssim_map(x: Tensor, y: Tensor, data_range: float, win_size: int = 7) -> Tensor:
    """scikit-image's ``structural_similarity`` map with its defaults (``gaussian_weights=False``,
    ``use_sample_covariance=True``, ``K1=0.01``, ``K2=0.03``): a ``win_size`` x ``win_size`` uniform window,
    variances and covariance scaled by ``N / (N - 1)`` (``N = win_size**2``), and only the positions whose
    window lies inside the frame (scikit-image filters the whole frame and then crops ``(win_size - 1) / 2``
    pixels from each border, which leaves exactly these). ``x, y (N, C, H, W)`` -> ``(N, C, H - 6, W - 6)``.
    """
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"scikit-image's SSIM needs frames of at least {win_size}x{win_size}, got "
                         f"{x.shape[-2]}x{x.shape[-1]}")
    box = torch.full((win_size,), 1.0 / win_size, device=x.device, dtype=x.dtype)
    mw = valid_blur_matrix(x.shape[-1], box)
    mh = valid_blur_matrix(x.shape[-2], box).T

    def blur(t: Tensor) -> Tensor:
        return mh @ (t @ mw)

    n = win_size * win_size
    cov_norm = n / (n - 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = blur(x), blur(y)
    vx = cov_norm * (blur(x * x) - ux * ux)
    vy = cov_norm * (blur(y * y) - uy * uy)
    vxy = cov_norm * (blur(x * y) - ux * uy)
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _per_clip(m: Tensor, b: int, t: int) -> Tensor:
    return m.mean(dim=(1, 2, 3)).view(b, t).float()


@register_metric("ssim_skimage", better="higher", unit="",
                 definition="PredRNN's SSIM: frames clipped to [0, 1] and cast to uint8 as floor(255 x) "
                            "(numpy's np.uint8(x * 255)), then skimage.metrics.structural_similarity with its "
                            "defaults on uint8 (7x7 uniform window, sample covariance, data range 255, borders "
                            "cropped), channels averaged, then averaged over frames and clips",
                 tables="PredRNN (NeurIPS 2017), PredRNN++ (ICML 2018), MIM (CVPR 2019), PredRNN-v2 (TPAMI 2022): "
                        "thuml/predrnn-pytorch's trainer.test")
def ssim_skimage(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = check(pred, target)
    b, t = pred.shape[:2]
    p8 = torch.floor(pred * 255)  # np.uint8 truncates
    t8 = torch.floor(target * 255)
    return _per_clip(uniform_ssim_map(p8.flatten(0, 1), t8.flatten(0, 1), data_range=255.0), b, t)


@register_metric("ssim_openstl", better="higher", unit="",
                 definition="OpenSTL's SSIM: skimage.metrics.structural_similarity with the defaults of "
                            "scikit-image <= 0.19 on float frames in [0, 1] (7x7 uniform window, sample "
                            "covariance, data range 2, the default for floats then, borders cropped), channels "
                            "averaged, then averaged over frames and clips",
                 tables="OpenSTL (NeurIPS 2023 Datasets and Benchmarks) and the SimVP/TAU papers' tables: "
                        "openstl/core/metrics.py")
def ssim_openstl(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = check(pred, target)
    b, t = pred.shape[:2]
    return _per_clip(uniform_ssim_map(pred.flatten(0, 1), target.flatten(0, 1), data_range=2.0), b, t)
