"""Pictures of predictions. Frames are ``(T, C, H, W)`` tensors in [0, 1].

One colour language across every picture and video of framecast:

* frames are grey (or RGB), errors and surprise use the ``magma`` colour map (dark = good, bright = bad);
* :data:`CONTEXT_COLOR` (blue) marks what the model was given, :data:`PREDICTED_COLOR` (orange) what it
  predicted within its trained horizon, :data:`BEYOND_COLOR` (purple) what it predicted beyond it;
* :data:`MODEL_COLOR` is the model's curve, :data:`BASELINE_COLOR` (grey, dashed) the copy-last baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

CONTEXT_COLOR = "#3b82f6"
PREDICTED_COLOR = "#f97316"
BEYOND_COLOR = "#a855f7"
MODEL_COLOR = "#1f77b4"
BASELINE_COLOR = "#7f7f7f"
ERROR_CMAP = "magma"


def to_image(frame: Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` for imshow."""
    arr = frame.detach().float().clamp(0, 1).cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def time_label(k: int, fps: float | None = None) -> str:
    """Column label of the frame ``k`` frames after the last context frame ``t``: ``t-2``, ``t``, ``t+3``,
    or, given ``fps``, seconds (``-0.20s``, ``+0.30s``)."""
    if fps:
        return f"{k / fps:+.2f}s" if k else "0s"
    return f"t{k:+d}" if k else "t"


def pick_columns(n: int, max_columns: int) -> list[int]:
    """At most ``max_columns`` of ``range(n)``, evenly spaced, always the first and the last."""
    if n <= max_columns:
        return list(range(n))
    return sorted({round(i * (n - 1) / (max_columns - 1)) for i in range(max_columns)})


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _row_label(ax, text: str, color: str = "black") -> None:
    ax.set_ylabel(text, fontsize=9, color=color, rotation=90, labelpad=4)


def _grid(rows: int, cols: int, h: int, w: int, cell: float = 1.05, extra_w: float = 1.6, extra_h: float = 0.7):
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols * w / h + extra_w, cell * rows + extra_h),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        _bare(ax)
    return fig, axes


GRAY = {"cmap": "gray", "vmin": 0, "vmax": 1, "interpolation": "nearest"}


def comparison_figure(context: Tensor, target: Tensor, prediction: Tensor, title: str = "",
                      fps: float | None = None, max_columns: int = 12) -> plt.Figure:
    """Rows: context, ground truth, prediction, absolute error (with a colour bar); columns: time.

    ``context (T_ctx, C, H, W)``, ``target, prediction (T_pred, C, H, W)``. Columns are labelled with the
    frame offset from the last context frame ``t`` (``t-2, t-1, t, t+1, ...``) or, given ``fps``, with
    seconds. At most ``max_columns`` columns: the last context frames and evenly spaced future frames.
    """
    t_ctx, horizon = len(context), len(target)
    ctx_idx = list(range(max(0, t_ctx - max_columns), t_ctx))
    hor_idx = pick_columns(horizon, max_columns)
    cols = max(len(ctx_idx), len(hor_idx))
    error = (prediction.float().clamp(0, 1) - target.float()).abs().mean(1).cpu().numpy()  # (T, H, W)
    h, w = target.shape[-2:]
    fig, axes = _grid(4, cols, h, w)
    im = None
    for j in range(cols):
        if j < len(ctx_idx):
            i = ctx_idx[j]
            axes[0, j].imshow(to_image(context[i]), **GRAY)
            axes[0, j].set_title(time_label(i - t_ctx + 1, fps), fontsize=8, color=CONTEXT_COLOR)
        else:
            axes[0, j].set_visible(False)
        if j < len(hor_idx):
            i = hor_idx[j]
            axes[1, j].imshow(to_image(target[i]), **GRAY)
            axes[1, j].set_title(time_label(i + 1, fps), fontsize=8, color=PREDICTED_COLOR)
            axes[2, j].imshow(to_image(prediction[i]), **GRAY)
            im = axes[3, j].imshow(error[i], cmap=ERROR_CMAP, vmin=0, vmax=1, interpolation="nearest")
        else:
            for r in (1, 2, 3):
                axes[r, j].set_visible(False)
    for r, (name, color) in enumerate([("context", CONTEXT_COLOR), ("ground truth", "black"),
                                       ("prediction", PREDICTED_COLOR), ("|error|", "black")]):
        _row_label(axes[r, 0], name, color)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[3, :].tolist(), shrink=0.9, pad=0.01, aspect=8)
        cb.set_label("|error|\n(intensity 0-1)", fontsize=7)
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def surprise_figure(target: Tensor, prediction: Tensor, surprise: Tensor, unit: str, title: str = "",
                    fps: float | None = None, max_columns: int = 12) -> plt.Figure:
    """Where in each predicted frame the model was surprised.

    Rows: ground truth, prediction, surprise ``(T, H, W)`` (one colour scale for all columns, up to its
    99.9th percentile, its colour bar labelled ``unit``); columns: horizon steps, each titled with the
    frame's total surprise (\u03a3). Say in ``title`` what the surprise is.
    """
    horizon = len(target)
    cols = pick_columns(horizon, max_columns)
    h, w = target.shape[-2:]
    maps = surprise.detach().float().cpu().numpy()
    vmax = max(float(np.quantile(maps, 0.999)), 1e-6)
    clipped = float(maps.max()) > vmax * 1.0001
    fig, axes = _grid(3, len(cols), h, w, extra_h=0.9)
    im = None
    for j, i in enumerate(cols):
        axes[0, j].imshow(to_image(target[i]), **GRAY)
        axes[0, j].set_title(f"{time_label(i + 1, fps)}\n\u03a3 {_number(float(maps[i].sum()))}", fontsize=8,
                             color=PREDICTED_COLOR)
        axes[1, j].imshow(to_image(prediction[i]), **GRAY)
        im = axes[2, j].imshow(maps[i], cmap=ERROR_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
    for r, name in enumerate(["ground truth", "prediction", "surprise"]):
        _row_label(axes[r, 0], name, PREDICTED_COLOR if r == 1 else "black")
    cb = fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.9, pad=0.01, aspect=8,
                      extend="max" if clipped else "neither")
    cb.set_label(unit, fontsize=7)
    cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def hidden_figure(inputs: Tensor, hidden_rgb: Tensor, outputs: Tensor, context_frames: int, title: str = "",
                  explained: Sequence[float] | None = None, fps: float | None = None, max_columns: int = 20
                  ) -> plt.Figure:
    """The top recurrent layer's state at every step, projected to RGB, between what the model read and
    what it predicted.

    ``inputs (S, C, H, W)``: the frame read at step ``s`` (the truth during the context, the model's own
    previous prediction after it); ``hidden_rgb (S, 3, h, w)`` in [0, 1]; ``outputs (S, C, H, W)``: the
    prediction of frame ``s + 1``. Column ``s`` is labelled with the time of the frame read.
    """
    steps = len(inputs)
    cols = pick_columns(steps, max_columns)
    h, w = inputs.shape[-2:]
    fig, axes = _grid(3, len(cols), h, w, extra_h=0.9)
    for j, s in enumerate(cols):
        k = s - context_frames + 1
        axes[0, j].imshow(to_image(inputs[s]), **GRAY)
        axes[0, j].set_title(time_label(k, fps), fontsize=8, color=CONTEXT_COLOR if k <= 0 else PREDICTED_COLOR)
        axes[1, j].imshow(to_image(hidden_rgb[s]), interpolation="nearest", extent=(0, w, h, 0))
        axes[2, j].imshow(to_image(outputs[s]), **GRAY)
    _row_label(axes[0, 0], "input read")
    _row_label(axes[1, 0], "hidden state\n(PCA \u2192 RGB)")
    _row_label(axes[2, 0], "next-frame\nprediction", PREDICTED_COLOR)
    lines = [title] if title else []
    note = "columns: time of the frame read (blue: true context frame, orange: the model's own prediction)"
    if explained is not None:
        pcs = ", ".join(f"{100 * e:.0f}%" for e in explained)
        note += f"\nRGB = principal components 1-3 of the top layer's state over this clip ({pcs} of its variance)"
    fig.suptitle("\n".join(lines + [note]), fontsize=9)
    return fig


def curves_figure(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], title: str = "",
                  fps: float | None = None, labels: dict[str, str] | None = None) -> plt.Figure:
    """Error per frame ahead: one panel per metric, one line (mean, band of one standard error) per
    predictor. ``curves[predictor][metric] = (mean (T,), sem (T,))``; the predictor ``copy_last`` is drawn
    as the grey dashed baseline."""
    metrics = list(next(iter(curves.values())))
    labels = labels or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False,
                             layout="constrained")
    names = {"mse_frame": "MSE per frame (\u2193)", "mae_frame": "MAE per frame (\u2193)", "ssim": "SSIM (\u2191)",
             "psnr": "PSNR dB (\u2191)", "mse": "MSE per pixel (\u2193)"}
    ylabels = {"mse_frame": "squared error summed over the frame", "mae_frame": "|error| summed over the frame",
               "ssim": "SSIM", "psnr": "PSNR (dB)", "mse": "mean squared error"}
    palette = [MODEL_COLOR, "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for ax, metric in zip(axes[0], metrics):
        k = 0
        for who, values in curves.items():
            mean, sem = (np.asarray(v, dtype=float) for v in values[metric])
            x = np.arange(1, len(mean) + 1, dtype=float)
            if fps:
                x = x / fps
            base = who == "copy_last"
            color = BASELINE_COLOR if base else palette[k % len(palette)]
            k += 0 if base else 1
            ax.plot(x, mean, color=color, ls="--" if base else "-", marker="o", ms=3,
                    label=labels.get(who, "copy-last baseline" if base else who))
            ax.fill_between(x, mean - sem, mean + sem, color=color, alpha=0.2, lw=0)
        ax.set_xlabel("seconds ahead" if fps else "frames ahead")
        ax.set_ylabel(ylabels.get(metric, metric))
        ax.set_title(names.get(metric, metric), fontsize=10)
        ax.grid(alpha=0.3)
        if not fps:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
