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
  each frame, then averaged over frames. Frames smaller than 11 pixels use a window as large as the frame.
- ``bits_per_pixel``: codelength of the true 8-bit frames (snapped to the levels ``k/255``) in bits per
  sub-pixel (``C*H*W`` values per frame), averaged over frames. A model with a per-pixel distribution
  (``head: logistic_mixture``) uses it (:func:`mixture_bits_per_clip`); a deterministic model or a
  baseline is given a discretized Laplace around its clipped prediction with one scale per horizon step
  fitted by maximum likelihood on the validation split (:func:`laplace_bits_per_clip`,
  :mod:`framecast.codelength`). Lower is better.
- ``lpips``: LPIPS (Zhang et al. 2018) with the AlexNet backbone and the LPIPS v0.1 linear layers through
  torchmetrics, per frame, frames scaled to [-1, 1] (grayscale repeated to 3 channels), then averaged.
  Only where both weight files are on this machine; nothing is ever downloaded (:class:`LPIPS`). Where
  it is unavailable it is reported as unavailable with the reason, never as a number.

All sums are taken in float64 (on devices that have it); the ``(B, T)`` results are float32.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch
from torch import Tensor


def _wide(t: Tensor) -> Tensor:
    """float64 where the device has it (not MPS), else float32."""
    return t.float() if t.device.type == "mps" else t.double()


def _check(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must both be (B, T, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    return _wide(pred).clamp(0, 1), _wide(target)


def _squared_error_sum(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    return (pred - target).pow(2).sum(dim=(2, 3, 4))


def mse_frame_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    return _squared_error_sum(pred, target).float()


def mae_frame_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    return (pred - target).abs().sum(dim=(2, 3, 4)).float()


def mse_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    return (_squared_error_sum(pred, target) / pred[0, 0].numel()).float()


def psnr_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    mse = _squared_error_sum(pred, target) / pred[0, 0].numel()
    return (10 * torch.log10(1.0 / mse)).float()  # mse == 0 gives +inf


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


def ssim_map(x: Tensor, y: Tensor, size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Local SSIM of images ``x, y (N, C, H, W)`` -> ``(N, C, H - size + 1, W - size + 1)``.

    Frames smaller than the window use a window as large as the frame. The separable Gaussian filter is
    applied as two matrix products (much faster than a grouped convolution on CPU, the same numbers).
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


def ssim_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = _check(pred, target)
    b, t = pred.shape[:2]
    m = ssim_map(pred.flatten(0, 1), target.flatten(0, 1))
    return m.mean(dim=(1, 2, 3)).view(b, t).float()


PIXEL_METRICS = {
    "mse_frame": mse_frame_per_clip,
    "mae_frame": mae_frame_per_clip,
    "mse": mse_per_clip,
    "psnr": psnr_per_clip,
    "ssim": ssim_per_clip,
}

# Every reported metric, in table order, with what it means and which way is better.
METRICS: dict[str, dict[str, str]] = {
    "mse_frame": {"better": "lower", "unit": "squared error per frame",
                  "definition": "squared error summed over C x H x W of a frame, averaged over frames and clips"},
    "mae_frame": {"better": "lower", "unit": "absolute error per frame",
                  "definition": "absolute error summed over C x H x W of a frame, averaged over frames and clips"},
    "mse": {"better": "lower", "unit": "squared error per sub-pixel",
            "definition": "squared error averaged over the sub-pixels of a frame (mse_frame / (C*H*W))"},
    "psnr": {"better": "higher", "unit": "dB",
             "definition": "10 log10(1 / mse) of each frame (data range 1), then averaged; inf for a perfect frame"},
    "ssim": {"better": "higher", "unit": "",
             "definition": "SSIM (Gaussian window 11, sigma 1.5, data range 1, valid windows) per frame, "
                           "channels averaged, then averaged"},
    "bits_per_pixel": {"better": "lower", "unit": "bits per sub-pixel",
                       "definition": "codelength of the true 8-bit frames under the model's per-pixel "
                                     "distribution, or a discretized Laplace around a deterministic prediction "
                                     "with one scale per step fitted by maximum likelihood on the validation split"},
    "lpips": {"better": "lower", "unit": "",
              "definition": "LPIPS (AlexNet, torchmetrics) per frame, frames in [-1, 1], grey repeated to RGB, "
                            "then averaged"},
}


def per_step(name: str, pred: Tensor, target: Tensor) -> Tensor:
    """Metric ``name`` per horizon step ``(T,)``, averaged over the clips of the batch."""
    return PIXEL_METRICS[name](pred, target).mean(0)


# --- codelength ----------------------------------------------------------------------------------


def bits_per_pixel_per_clip(bits: Tensor) -> Tensor:
    """Per-sub-pixel codelengths ``(B, T, C, H, W)`` -> bits per sub-pixel of each frame ``(B, T)``."""
    if bits.dim() != 5:
        raise ValueError(f"bits must be (B, T, C, H, W), got {tuple(bits.shape)}")
    return _wide(bits).mean(dim=(2, 3, 4)).float()


def laplace_bits_per_clip(pred: Tensor, target: Tensor, scales: Tensor) -> Tensor:
    """``bits_per_pixel (B, T)`` of ``target`` under a discretized Laplace around the clipped ``pred`` with
    scale ``scales[t]`` at step ``t`` (fitted with :class:`framecast.codelength.LaplaceFit`)."""
    from framecast.codelength import laplace_bits

    _check(pred, target)
    scales = torch.as_tensor(scales, dtype=torch.float64)
    if scales.shape != (pred.shape[1],):
        raise ValueError(f"need one Laplace scale per step ({pred.shape[1]}), got shape {tuple(scales.shape)}")
    return bits_per_pixel_per_clip(laplace_bits(pred.cpu(), target.cpu(), scales))


def mixture_bits_per_clip(head, params: Tensor, target: Tensor) -> Tensor:
    """``bits_per_pixel (B, T)`` of ``target (B, T, C, H, W)`` under a distribution head's ``params
    (B, T, P, H, W)`` (e.g. :class:`framecast.models.heads.LogisticMixtureHead`)."""
    return bits_per_pixel_per_clip(head.bits(params, target))


# --- LPIPS ---------------------------------------------------------------------------------------

LPIPS_ENV = "FRAMECAST_LPIPS"  # "0" / "off" / "false": never load LPIPS
LPIPS_MIN_SIZE = 31  # AlexNet's pooling needs frames of at least 31 x 31


class NoDownload(RuntimeError):
    pass


@contextlib.contextmanager
def no_download():
    """Make any download through ``torch.hub`` (which torchvision's weights use) raise instead."""
    import torch.hub

    original = torch.hub.download_url_to_file

    def refuse(url, *args, **kwargs):
        raise NoDownload(f"framecast never downloads weights (refused {url})")

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


def lpips_weight_files() -> tuple[Path, Path]:
    """Where LPIPS' weights must be: AlexNet's ImageNet weights in torch hub's cache
    (``$TORCH_HOME/hub/checkpoints``) and the LPIPS linear layers in torchmetrics' package files."""
    import torchmetrics.functional.image.lpips as tm_lpips
    from torchvision.models import AlexNet_Weights

    url = AlexNet_Weights.IMAGENET1K_V1.url
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    linear = Path(tm_lpips.__file__).parent / "lpips_models" / "alex.pth"
    return backbone, linear


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS cannot be computed here, or ``None`` when both weight files are present."""
    if os.environ.get(LPIPS_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return f"switched off by {LPIPS_ENV}={os.environ[LPIPS_ENV]}"
    try:
        backbone, linear = lpips_weight_files()
    except Exception as e:  # noqa: BLE001  (torchmetrics or torchvision missing or changed)
        return f"torchmetrics' LPIPS cannot be imported: {e}"
    missing = [str(p) for p in (backbone, linear) if not p.is_file()]
    if missing:
        return "weights not found locally (no download is attempted): " + ", ".join(missing)
    return None


class LPIPS:
    """LPIPS per clip and step, ``lpips(pred, target) -> (B, T)``, or unavailable with a reason.

    ``available`` / ``reason`` say whether it can run. The network is built once, only when both
    weight files are found locally, with every download through ``torch.hub`` refused; any failure
    while building it makes the metric unavailable (with the error as the reason) instead of raising.
    """

    def __init__(self, device: str | torch.device = "cpu", enabled: bool = True):
        self.net = None
        self.reason = lpips_unavailable_reason() if enabled else "switched off (--lpips off)"
        if self.reason is None:
            try:
                with no_download():
                    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                    self.net = LearnedPerceptualImagePatchSimilarity(net_type="alex").net.to(device).eval()
            except Exception as e:  # noqa: BLE001  (never crash the benchmark for an optional metric)
                self.reason = f"LPIPS could not be built from the local weights: {type(e).__name__}: {e}"

    @property
    def available(self) -> bool:
        return self.net is not None

    def unavailable_for(self, size: tuple[int, int]) -> str | None:
        """The reason LPIPS cannot score frames of ``size (H, W)``, else ``None``."""
        if not self.available:
            return self.reason
        if min(size) < LPIPS_MIN_SIZE:
            return f"frames of {size[0]}x{size[1]} are smaller than the {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} AlexNet needs"
        return None

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.net is None:
            raise RuntimeError(f"LPIPS is unavailable: {self.reason}")
        if pred.shape != target.shape or pred.dim() != 5:
            raise ValueError(f"pred and target must both be (B, T, C, H, W), got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}")
        b, t, c = pred.shape[:3]
        device = next(self.net.parameters()).device

        def prep(x: Tensor) -> Tensor:
            x = x.float().clamp(0, 1).flatten(0, 1).to(device)
            if c == 1:
                x = x.expand(-1, 3, -1, -1)
            return x * 2 - 1

        out = self.net(prep(pred), prep(target))
        return out.reshape(b, t).float().cpu()


# --- accumulating over a split -------------------------------------------------------------------


class MetricAccumulator:
    """Exact per-step averages of ``(B, T)`` metric values over any number of batches.

    ``add(name, values)`` with ``values (B, T)``; ``per_step(name) -> (T,)``; ``mean(name) -> float``.
    A metric that cannot be computed is recorded with ``set_unavailable(name, reason)`` and then
    reported by ``unavailable[name]`` instead of a value.
    """

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.unavailable: dict[str, str] = {}

    def add(self, name: str, values: Tensor) -> None:
        if values.dim() != 2:
            raise ValueError(f"metric values must be (B, T), got {tuple(values.shape)}")
        values = values.detach().double().cpu()
        s = values.sum(0)
        self.sums[name] = self.sums[name] + s if name in self.sums else s
        self.counts[name] = self.counts.get(name, 0) + values.shape[0]

    def merge(self, other: MetricAccumulator) -> None:
        """Add ``other``'s clips (e.g. another process's): the averages are then those over both."""
        for name, s in other.sums.items():
            self.sums[name] = self.sums[name] + s if name in self.sums else s.clone()
            self.counts[name] = self.counts.get(name, 0) + other.counts[name]
        self.unavailable.update(other.unavailable)

    def set_unavailable(self, name: str, reason: str) -> None:
        self.unavailable[name] = reason

    def add_pixel_metrics(self, pred: Tensor, target: Tensor, names=tuple(PIXEL_METRICS)) -> None:
        for name in names:
            self.add(name, PIXEL_METRICS[name](pred, target))

    def per_step(self, name: str) -> Tensor:
        if name in self.unavailable:
            raise KeyError(f"{name} is unavailable: {self.unavailable[name]}")
        return self.sums[name] / self.counts[name]

    def mean(self, name: str) -> float:
        """The average over steps (= over all clip-step pairs); ``inf`` where any step is ``inf``."""
        v = self.per_step(name)
        return math.inf if torch.isinf(v).any() else float(v.mean())

    def names(self) -> list[str]:
        return list(self.sums)
