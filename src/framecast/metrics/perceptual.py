"""LPIPS (Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018) through torchmetrics, only from weights already on this machine.

``LPIPS(device)`` builds the network once with every download refused; ``lpips(pred, target, net=...)`` is
the registered metric. Where the weights are missing, the metric is reported as unavailable with the reason,
never as a number.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import Tensor

from framecast.metrics.registry import register_metric

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


@register_metric("lpips", better="lower", unit="", needs="lpips",
                 definition="LPIPS (AlexNet backbone, LPIPS v0.1 linear layers, torchmetrics) per frame, frames "
                            "scaled to [-1, 1], grayscale repeated to 3 channels, then averaged over frames and clips",
                 tables="the LPIPS column of OpenSTL's and PredBench's tables (AlexNet)")
def lpips(pred: Tensor, target: Tensor, *, net: LPIPS) -> Tensor:
    return net(pred, target)
