"""Matplotlib figures of predictions: the comparison grid, the surprise map, the hidden state and the error
curves (the one :func:`curves_figure` of ``framecast visualize`` and ``framecast benchmark``), and :func:`save`.

Frames are ``(T, C, H, W)`` tensors in [0, 1]; the colours are those of :mod:`framecast.viz.style`. Every
function takes plain tensors or numbers, so a notebook can call them.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from framecast.viz.style import (
    BASELINE_COLOR,
    BASELINE_NAME,
    CONTEXT_COLOR,
    CURVE_PALETTE,
    ERROR_CMAP,
    PREDICTED_COLOR,
    time_label,
)

GRAY = {"cmap": "gray", "vmin": 0, "vmax": 1, "interpolation": "nearest"}


def to_image(frame: Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` for imshow."""
    arr = frame.detach().float().clamp(0, 1).cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


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


# --- error curves ---------------------------------------------------------------------------------------

Curves = Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]
"""``curves[metric][predictor] = (x, y)``: one line per predictor in the panel of each metric."""


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _metric_text(metric: str) -> tuple[str, str]:
    """The panel title (which way is better) and the y label (the unit) of a registered metric."""
    from framecast.metrics import METRICS

    info = METRICS.get(metric)
    if info is None:
        return metric, metric
    arrow = "\u2193" if info.better == "lower" else "\u2191"
    return f"{metric} ({arrow} {info.better} is better)", metric + (f" [{info.unit}]" if info.unit else "")


def curves_figure(curves: Curves, *, title: str = "", xlabel: str = "frames ahead",
                  labels: Mapping[str, str] | None = None, unavailable: Mapping[str, str] | None = None,
                  columns: int | None = None) -> plt.Figure:
    """Error per frame ahead: one panel per metric, one line per predictor.

    ``curves[metric][predictor] = (x, y)`` (the same ``x`` for every predictor, e.g. frames or seconds
    ahead; say which in ``xlabel``). Each panel is titled with the metric and which way is better, its y
    axis with the unit (:data:`framecast.metrics.METRICS`). The predictor ``copy_last`` is the grey dashed
    baseline; every other predictor keeps one colour in all panels. Non-finite values (the ``inf`` PSNR of
    a perfect frame) are not drawn and are listed in the panel. ``labels``: legend text per predictor
    (default: its name, "copy-last baseline" for ``copy_last``). ``unavailable[metric] = reason``: a metric
    with no line gets a panel saying why. ``columns``: panels per row (default: all in one row); where the
    grid has a free panel the legend goes there, else into the first panel.
    """
    unavailable = dict(unavailable or {})
    names = list(curves) + [m for m in unavailable if m not in curves]
    if not names:
        raise ValueError("curves_figure needs at least one metric")
    labels = dict(labels or {})
    if columns:  # a grid with one more panel, for the legend
        cols = max(1, min(columns, len(names) + 1))
        rows = math.ceil((len(names) + 1) / cols)
    else:
        cols, rows = len(names), 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    axes = axes.ravel()
    colors: dict[str, str] = {}
    handles: dict[str, Any] = {}
    for ax, metric in zip(axes, names):
        panel_title, ylabel = _metric_text(metric)
        ax.set_title(panel_title, fontsize=10)
        lines = curves.get(metric) or {}
        if not lines:
            reason = unavailable.get(metric, "no values")
            ax.text(0.5, 0.5, "unavailable:\n" + _wrap(reason, 40), ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        not_drawn: list[str] = []
        integral = True
        for who, (x, y) in lines.items():
            x, y = np.asarray(x, dtype=float), np.array(y, dtype=float)
            integral = integral and bool(np.all(x == np.round(x)))
            bad = ~np.isfinite(y)
            if bad.any():
                not_drawn += [f"{who} at {v:g}" for v in x[bad]]
                y[bad] = np.nan
            base = who == BASELINE_NAME
            if who not in colors:
                colors[who] = BASELINE_COLOR if base else CURVE_PALETTE[
                    sum(1 for k in colors if k != BASELINE_NAME) % len(CURVE_PALETTE)]
            (line,) = ax.plot(x, y, color=colors[who], ls="--" if base else "-", marker="o", ms=3,
                              label=labels.get(who, "copy-last baseline" if base else who))
            handles.setdefault(who, line)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if integral:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if not_drawn:
            ax.text(0.02, 0.02, _wrap("not finite, not drawn: " + ", ".join(not_drawn), 50), fontsize=7,
                    transform=ax.transAxes, va="bottom")
    for ax in axes[len(names):]:
        ax.axis("off")
    if handles:
        legend = {"handles": list(handles.values()), "labels": [h.get_label() for h in handles.values()]}
        if len(axes) > len(names):
            axes[len(names)].legend(**legend, loc="center", title="predictor", fontsize=9)
        else:
            axes[0].legend(**legend, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def curves_from_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`curves_figure` for a ``framecast benchmark`` results dict: every
    metric per horizon step of every predictor, the unavailable ones with their reason, four panels a row
    and a title naming the clips (``curves_figure(**curves_from_results(results))``)."""
    steps = list(results["steps"])
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    unavailable: dict[str, str] = {}
    for metric in results["metrics"]:
        lines = {p["name"]: (steps, list(p["metrics"][metric]["per_step"])) for p in results["predictors"]
                 if p["metrics"][metric]["available"]}
        if lines:
            curves[metric] = lines
        else:
            unavailable[metric] = next((p["metrics"][metric].get("reason") or "" for p in results["predictors"]),
                                       "") or "no values"
    d = results.get("data") or {}
    xlabel = "frames ahead" + (f" (1 frame = {1 / d['fps']:.3g} s)" if d.get("fps") else "")
    title = ""
    if {"clips", "split", "class"} <= set(d):
        title = f"{d['clips']} {d['split']} clips of {str(d['class']).rsplit('.', 1)[-1]}"
        if d.get("size") and d.get("channels"):
            title += f", {d['channels']}x{d['size'][0]}x{d['size'][1]}"
        if d.get("context_frames"):
            title += f", {d['context_frames']} context frames"
    return {"curves": curves, "unavailable": unavailable, "title": title, "xlabel": xlabel, "columns": 4}


def save(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed) and close it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
