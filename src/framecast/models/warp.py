"""Warping heads: the next frame is the current frame moved by a predicted per-pixel motion field.

Deep Voxel Flow (Liu et al., "Video Frame Synthesis using Deep Voxel Flow", ICCV 2017, official code
https://github.com/liuziwei7/voxel-flow) and SDC-Net (Reda et al., "SDC-Net: Video prediction using spatially-
displaced convolution", ECCV 2018, official code https://github.com/NVIDIA/semantic-segmentation/tree/sdcnet)
predict a frame by sampling the last one at displaced positions. Here the recurrent core's top features
``h (B, F, H/p, W/p)`` give a motion field, and the frame the step read, ``x_t (B, C, H, W)``, is warped by it:

    u      = up_p(conv3x3(h))                              (B, 2, H, W), in pixels, (u_x, u_y)
    W(x, u)(i, j) = bilinear sample of x at (j + u_x(i, j), i + u_y(i, j))   (backward warp, border padding)
    warp:          x_hat = W(x_t, u)                        (residual: false)
                   x_hat = W(x_t, u) + unpatch(conv1x1(h))  (residual: true, a correction for what appears)
    warp_mixture:  the discretized logistic mixture of :class:`~framecast.models.heads.LogisticMixtureHead`
                   with means mu_j = W(x_t, u) + unpatch(conv1x1(h))_j, so its codelength stays exact

``up_p`` is bilinear upsampling by the patch size ``p`` (``align_corners=False``): one motion vector per patch,
smoothly interpolated, so every vector is learned from all the pixels of its patch. The sampling is
``torch.nn.functional.grid_sample`` (bilinear, ``padding_mode="border"``, ``align_corners=False``) on the grid of
pixel centres ``((2j + 1)/W - 1, (2i + 1)/H - 1)``, which samples every pixel exactly at ``u = 0``. Every layer
that makes ``u`` and the correction starts at zero, so a fresh model is exactly copy-last and learns motion
from there. The warp runs in float32 also under bfloat16 autocast (a bfloat16 coordinate is off by up to 1/8
pixel at 64 pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.heads import LogisticMixtureHead


def pixel_grid(height: int, width: int, like: Tensor) -> Tensor:
    """The grid ``(1, H, W, 2)`` of pixel centres in ``grid_sample``'s ``align_corners=False`` coordinates."""
    ys = (torch.arange(height, device=like.device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=like.device, dtype=torch.float32) * 2 + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).unsqueeze(0)


def warp(frame: Tensor, flow: Tensor) -> Tensor:
    """``frame (B, C, H, W)`` sampled at each pixel plus ``flow (B, 2, H, W)`` (pixels, ``(u_x, u_y)``), in float32.

    Bilinear, border padding; a zero ``flow`` returns ``frame`` exactly."""
    h, w = frame.shape[-2:]
    with torch.autocast(frame.device.type, enabled=False):
        flow = flow.float()
        scale = torch.tensor([2.0 / w, 2.0 / h], device=flow.device).view(1, 2, 1, 1)
        grid = pixel_grid(h, w, flow) + (flow * scale).permute(0, 2, 3, 1)
        return F.grid_sample(frame.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class MotionField(nn.Module):
    """``h (B, F, H/p, W/p)`` -> ``u (B, 2, H, W)`` in pixels: a zero-initialised 3x3 convolution, upsampled by ``p``."""

    def __init__(self, in_features: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.conv = nn.Conv2d(in_features, 2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: Tensor) -> Tensor:
        u = self.conv(h).float()
        if self.patch_size > 1:
            u = F.interpolate(u, scale_factor=self.patch_size, mode="bilinear", align_corners=False)
        return u


def unpatch(x: Tensor, p: int) -> Tensor:
    return F.pixel_shuffle(x, p) if p > 1 else x


class WarpHead(nn.Module):
    """``head: warp``: ``x_hat = W(x_t, u)`` (+ a zero-initialised correction when ``residual``); see the module.

    Returns ``(frame (B, C, H, W), None)``; :meth:`flow` gives ``u (B, 2, H, W)`` from the features."""

    def __init__(self, in_features: int, channels: int, patch_size: int, residual: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.residual = residual
        self.motion = MotionField(in_features, patch_size)
        self.correction = None
        if residual:
            self.correction = nn.Conv2d(in_features, channels * patch_size**2, 1)
            nn.init.zeros_(self.correction.weight)
            nn.init.zeros_(self.correction.bias)

    def flow(self, h: Tensor) -> Tensor:
        """The motion field ``u (..., 2, H, W)`` in pixels of the features ``h (..., F, H/p, W/p)``."""
        lead = h.shape[:-3]
        u = self.motion(h.reshape(-1, *h.shape[-3:]))
        return u.reshape(*lead, *u.shape[-3:])

    def forward(self, h: Tensor, current: Tensor) -> tuple[Tensor, None]:
        frame = warp(current, self.motion(h)).to(current.dtype)
        if self.correction is not None:
            frame = frame + unpatch(self.correction(h), self.patch_size)
        return frame, None


class WarpMixtureHead(LogisticMixtureHead):
    """``head: warp_mixture``: the logistic mixture whose means are offsets from ``W(x_t, u)``; see the module.

    The offsets and mixture logits start at zero and the log-scales at ``init_log_scale`` (about two levels), so
    a fresh head is copy-last with a narrow distribution around it. ``residual`` changes nothing: the means are
    always offsets from the warped frame. ``bits``, ``log_prob``, ``sample`` and ``mean`` are the mixture's."""

    def __init__(self, in_features: int, channels: int, patch_size: int, num_mixtures: int = 5,
                 residual: bool = False, init_log_scale: float = math.log(2.0 / 255)):
        super().__init__(in_features, channels, patch_size, num_mixtures, residual=residual)
        self.motion = MotionField(in_features, patch_size)
        nn.init.zeros_(self.conv.weight)
        with torch.no_grad():
            bias = torch.zeros(3, num_mixtures, channels, patch_size**2)
            bias[2] = init_log_scale
            self.conv.bias.copy_(bias.flatten())

    flow = WarpHead.flow

    def forward(self, h: Tensor, current: Tensor) -> tuple[Tensor, Tensor]:
        warped = warp(current, self.motion(h))
        params = unpatch(self.conv(h), self.patch_size).float()
        logits, means, log_scales = self.split(params)
        means = means + warped.unsqueeze(-4)
        params = torch.stack([logits, means, log_scales], -5).flatten(-5, -3)
        return self.mean(params).to(current.dtype), params


def is_warp_head(head: nn.Module) -> bool:
    """Whether a model's head predicts a motion field (has :meth:`WarpHead.flow`)."""
    return callable(getattr(head, "flow", None))
