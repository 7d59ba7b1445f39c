"""Frame prediction metrics, every one per clip and horizon step ``t+1 .. t+K``, in one registry.

``framecast.metrics.<name>(pred, target) -> (B, T)`` for ``pred, target (B, T, C, H, W)`` in [0, 1]
(predictions are clipped to [0, 1] first). :data:`METRICS` holds every metric with its exact convention
(:class:`~framecast.metrics.registry.Metric`: ``better``, ``unit``, ``definition``, ``needs``, ``tables``);
:class:`MetricAccumulator` averages them exactly over a split. The reported per-step value is the mean over
clips (``(T,)``) and the reported average is the mean over steps of that, which equals the mean over all
(clip, step) pairs. See ``docs/metrics.md`` for the conventions beside the published tables'.
"""

from framecast.metrics.registry import METRICS, Metric, metric, pixel_metrics, register_metric  # noqa: I001
from framecast.metrics.pixel import PSNR_MAX_DB, mae_frame, mse, mse_frame, psnr
from framecast.metrics.ssim import gaussian_window, ssim, ssim_map, ssim_openstl, ssim_skimage, valid_blur_matrix
from framecast.metrics.bits import (
    bits_per_pixel,
    bits_per_pixel_per_clip,
    laplace_bits_per_clip,
    mixture_bits_per_clip,
)
from framecast.metrics.perceptual import LPIPS, LPIPS_ENV, LPIPS_MIN_SIZE, NoDownload, lpips, no_download
from framecast.metrics.accumulator import MetricAccumulator

__all__ = [
    "LPIPS",
    "LPIPS_ENV",
    "LPIPS_MIN_SIZE",
    "METRICS",
    "PSNR_MAX_DB",
    "Metric",
    "MetricAccumulator",
    "NoDownload",
    "bits_per_pixel",
    "bits_per_pixel_per_clip",
    "gaussian_window",
    "laplace_bits_per_clip",
    "lpips",
    "mae_frame",
    "metric",
    "mixture_bits_per_clip",
    "mse",
    "mse_frame",
    "no_download",
    "pixel_metrics",
    "psnr",
    "register_metric",
    "ssim",
    "ssim_map",
    "ssim_openstl",
    "ssim_skimage",
    "valid_blur_matrix",
]
