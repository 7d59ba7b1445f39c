"""The motion field of a warping model as a picture, in the colour-wheel convention of optical flow.

A motion vector ``(u_x, u_y)`` (pixels per step; ``u_y`` down the image) is drawn in HSV: the hue is its
direction (red: to the right, then yellow, green, cyan, blue, magenta going round, counter-clockwise on the
screen), the saturation its length divided by the largest length drawn, the value 1, so a still pixel is white
and the fastest is fully coloured (Baker et al., "A Database and Evaluation Methodology for Optical Flow",
IJCV 2011, use the same wheel idea). The motion vector at a pixel says where the model takes that pixel's new
value *from* in the frame it read (a backward warp, :mod:`framecast.models.warp`), so an object moving right
shows as pointing left. :func:`flow_figure` puts the frames read, the motion fields and the predicted frames
in rows, with a legend wheel.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from framecast.viz.figures import GRAY, _grid, _row_label, pick_columns, to_image
from framecast.viz.style import CONTEXT_COLOR, PREDICTED_COLOR, time_label


def flow_to_rgb(flow: Tensor, max_norm: float | None = None) -> np.ndarray:
    """``flow (2, H, W)`` -> ``(H, W, 3)`` RGB in [0, 1]: hue = direction, saturation = length / ``max_norm``
    (default: the largest length in ``flow``; a zero field is white)."""
    u = flow.detach().float().cpu().numpy()
    norm = np.hypot(u[0], u[1])
    top = float(norm.max()) if max_norm is None else float(max_norm)
    hue = (np.arctan2(-u[1], u[0]) / (2 * math.pi)) % 1.0  # screen y points down: -u_y is up
    sat = np.clip(norm / top, 0, 1) if top > 0 else np.zeros_like(norm)
    return hsv_to_rgb(hue, sat, np.ones_like(norm))


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Elementwise HSV (each in [0, 1]) -> ``(..., 3)`` RGB in [0, 1]."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,))
    for k, rgb in enumerate(choices):
        out[i == k] = np.stack(rgb, -1)[i == k]
    return out


def legend_wheel(size: int = 65) -> np.ndarray:
    """The legend: ``(size, size, 4)`` RGBA, the colour of every vector up to length 1 (outside: transparent)."""
    r = np.linspace(-1, 1, size)
    ux, uy = np.meshgrid(r, r)
    rgb = flow_to_rgb(torch.from_numpy(np.stack([ux, uy])), max_norm=1.0)
    alpha = (np.hypot(ux, uy) <= 1).astype(float)[..., None]
    return np.concatenate([rgb, alpha], -1)


def flow_figure(inputs: Tensor, flows: Tensor, outputs: Tensor, context_frames: int, title: str = "",
                fps: float | None = None, max_columns: int = 16) -> plt.Figure:
    """The frames read, the motion fields and the predictions of one clip, with the colour wheel.

    ``inputs (S, C, H, W)``: the frame read at step ``s``; ``flows (S, 2, H, W)``: the motion field of step
    ``s`` in pixels; ``outputs (S, C, H, W)``: the prediction of frame ``s + 1``. Every field is coloured on
    the same scale, the largest length of the clip."""
    steps = len(inputs)
    cols = pick_columns(steps, max_columns)
    h, w = inputs.shape[-2:]
    top = float(torch.linalg.vector_norm(flows.float(), dim=1).max())
    fig, axes = _grid(3, len(cols) + 1, h, w, extra_h=0.9)
    for j, s in enumerate(cols):
        k = s - context_frames + 1
        axes[0, j].imshow(to_image(inputs[s]), **GRAY)
        axes[0, j].set_title(time_label(k, fps), fontsize=8, color=CONTEXT_COLOR if k <= 0 else PREDICTED_COLOR)
        axes[1, j].imshow(flow_to_rgb(flows[s], top), interpolation="nearest")
        axes[2, j].imshow(to_image(outputs[s]), **GRAY)
    legend = axes[1, -1]
    legend.imshow(legend_wheel(), extent=(-top, top, top, -top))
    legend.set_title(f"|u| up to\n{top:.2f} px", fontsize=7)
    for ax in (axes[0, -1], axes[2, -1]):
        ax.set_visible(False)
    _row_label(axes[0, 0], "input read")
    _row_label(axes[1, 0], "motion field")
    _row_label(axes[2, 0], "next-frame\nprediction", PREDICTED_COLOR)
    note = ("motion field: where each pixel of the prediction is taken from in the frame read; hue = direction, "
            "saturation = length (white: still)")
    fig.suptitle("\n".join(([title] if title else []) + [note]), fontsize=9)
    return fig


def motion_field(model, hidden: Tensor) -> Tensor:
    """The motion field ``(S, 2, H, W)`` (CPU, float32) of a warping model's top features ``hidden (S, F, h, w)``
    (``Rollout.hidden`` of one clip), from its head's ``flow``."""
    from framecast.viz.analysis import device_of, predictor_of

    with torch.inference_mode():
        return predictor_of(model).head.flow(hidden.to(device_of(model))).float().cpu()
