"""Pictures of a forecast: the forecast video, the sampled futures video, the strip and the spread figure.

* :func:`forecast_video`: the context frames then the forecast, a blue border and CONTEXT on the frames the
  model read, an orange border and FORECAST on the ones it rolled out, the seconds ahead on every frame; where
  the truth is known, truth and |error| panels beside the forecast;
* :func:`samples_video`: the mean forecast beside the ``K`` sampled futures in a grid;
* :func:`strip_figure` (``forecast.png``): context and forecast frames in a row, labelled with seconds, the
  truth under them where known;
* :func:`spread_figure` (``spread.png``): the per-pixel standard deviation across the samples over time.

Videos are :class:`~framecast.viz.render.SideBySide` frames (``(T, H', W', 3)`` uint8, panel boxes), drawn with
the colours, fonts and float -> uint8 conversion of :mod:`framecast.viz.render`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from framecast.forecasting.api import Forecast
from framecast.viz.render import (
    BACKGROUND,
    MISSING,
    PHASE_COLORS,
    TEXT,
    SideBySide,
    auto_scale,
    fit_font,
    frames_to_uint8,
    magma_lut,
)
from framecast.viz.style import time_label

HEADER, FOOTER, GAP, MARGIN = 22, 44, 10, 10
PHASES = {"context": "CONTEXT (the video)", "predicted": "FORECAST"}


def _ahead(t: int, context: int, fps: float | None) -> str:
    """The time label of video frame ``t`` of the drawing (``t < context``: the context)."""
    k = t - context + 1
    if fps:
        return f"{k / fps:+.2f} s ahead" if k > 0 else f"{k / fps:+.2f} s"
    return f"{k:+d} frames ahead" if k > 0 else f"frame t{k:+d}" if k else "frame t"


class _Canvas:
    """A grid of ``rows x cols`` panels of ``(h, w)`` upscaled ``s`` times, each with a title and a border."""

    def __init__(self, rows: int, cols: int, h: int, w: int, s: int):
        self.s, self.ph, self.pw = s, h * s, w * s
        self.border = max(3, s)
        self.cell_w, self.cell_h = self.pw + 2 * self.border + GAP, HEADER + self.ph + 2 * self.border
        width = 2 * MARGIN + cols * self.cell_w - GAP
        height = rows * self.cell_h + FOOTER
        self.width, self.height = width + width % 2, height + height % 2

    def box(self, row: int, col: int) -> tuple[int, int]:
        """``(top, left)`` of a panel's pixels."""
        return row * self.cell_h + HEADER + self.border, MARGIN + col * self.cell_w + self.border

    def new(self) -> np.ndarray:
        canvas = np.empty((self.height, self.width, 3), np.uint8)
        canvas[:] = BACKGROUND
        return canvas

    def paste(self, canvas: np.ndarray, box: tuple[int, int], panel: np.ndarray | None, color) -> None:
        top, left, b = box[0], box[1], self.border
        canvas[top - b : top + self.ph + b, left - b : left + self.pw + b] = color
        if panel is None:
            canvas[top : top + self.ph, left : left + self.pw] = MISSING
        else:
            canvas[top : top + self.ph, left : left + self.pw] = np.repeat(np.repeat(panel, self.s, 0), self.s, 1)

    def titles(self, draw: ImageDraw.ImageDraw, items: list[tuple[tuple[int, int], str, str | None]]) -> None:
        """Each panel's title above it and, for an empty panel, why it is empty."""
        for (top, left), title, empty in items:
            draw.text((left + self.pw // 2, top - self.border - HEADER // 2), title, fill=TEXT,
                      font=fit_font(draw, title, self.pw + GAP, 14), anchor="mm")
            if empty:
                draw.text((left + self.pw // 2, top + self.ph // 2), empty, fill=TEXT,
                          font=fit_font(draw, empty, self.pw - 8, 13), anchor="mm")

    def footer(self, draw: ImageDraw.ImageDraw, phase: str, label: str) -> None:
        """The phase in its colour and the time label, one line each, under the panels."""
        y = self.height - FOOTER
        width = self.width - 2 * MARGIN
        name = PHASES[phase]
        draw.text((MARGIN, y + 12), name, fill=PHASE_COLORS[phase], font=fit_font(draw, name, width, 14), anchor="lm")
        draw.text((MARGIN, y + 32), label, fill=TEXT, font=fit_font(draw, label, width, 13), anchor="lm")


def _label(t: int, total: int, context: int, fc: Forecast) -> str:
    text = f"frame {t + 1}/{total}  {_ahead(t, context, fc.fps)}"
    if fc.start is not None and fc.fps:
        text += f"  (video {fc.start + (t - context) / fc.fps:.2f} s)"
    return text


def _error_u8(pred: Tensor, truth: Tensor) -> np.ndarray:
    """``|pred - truth|`` averaged over channels, in the error colours ``(T, H, W, 3)``."""
    diff = (pred.float().clamp(0, 1) - truth.float()).abs().mean(1)
    return magma_lut()[(diff * 255).round().clamp(0, 255).to(torch.long).numpy()]


def forecast_video(fc: Forecast, truth: Tensor | None = None, scale: int | None = None) -> SideBySide:
    """The frames of ``forecast.mp4``: the context then the forecast (panel ``forecast``) and, with ``truth``
    (``(T, C, H, W)`` float, the frames after the context as far as known; empty or None: none), panels
    ``truth`` and ``error`` beside it. ``scale``: the nearest-neighbour upscale (default: to about 192 pixels)."""
    t_ctx, (h, w) = len(fc.context), fc.frames.shape[-2:]
    truth = None if truth is None or not len(truth) else truth[: fc.horizon].float()
    s = scale or auto_scale(h, w)
    names = ["forecast"] + (["truth", "error"] if truth is not None else [])
    grid = _Canvas(1, len(names), h, w, s)
    boxes = {name: grid.box(0, i) for i, name in enumerate(names)}
    context_u8, forecast_u8 = frames_to_uint8(fc.context), frames_to_uint8(fc.frames)
    truth_u8 = frames_to_uint8(truth) if truth is not None else None
    error_u8 = _error_u8(fc.frames[: len(truth)], truth) if truth is not None else None
    total = t_ctx + fc.horizon
    frames, phases = [], []
    for t in range(total):
        phase = "context" if t < t_ctx else "predicted"
        k = t - t_ctx  # forecast step, 0-based
        if phase == "context":
            panels = {"forecast": (context_u8[t], "context", None), "truth": (context_u8[t], "truth", None),
                      "error": (None, "|error|", "context")}
        else:
            known = truth is not None and k < len(truth)
            panels = {"forecast": (forecast_u8[k], "forecast", None),
                      "truth": (truth_u8[k] if known else None, "truth", None if known else "past the video's end"),
                      "error": (error_u8[k] if known else None, "|error|", None if known else "no truth")}
        canvas = grid.new()
        for name in names:
            grid.paste(canvas, boxes[name], panels[name][0], PHASE_COLORS[phase])
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        grid.titles(draw, [(boxes[n], panels[n][1], panels[n][2]) for n in names])
        grid.footer(draw, phase, _label(t, total, t_ctx, fc))
        frames.append(np.asarray(img))
        phases.append(phase)
    return SideBySide(np.stack(frames), boxes, s, (h, w), phases)


def samples_video(fc: Forecast, scale: int | None = None, columns: int | None = None) -> SideBySide:
    """The frames of ``samples.mp4``: the mean forecast (panel ``mean``) beside the ``K`` sampled futures
    (panels ``sample_1`` .. ``sample_K``) in a grid of ``columns`` (default: about square), after the context."""
    if fc.samples is None:
        raise ValueError("the forecast has no samples (forecast(..., samples=K))")
    k_samples, t_ctx = len(fc.samples), len(fc.context)
    h, w = fc.frames.shape[-2:]
    cols = columns or math.ceil(math.sqrt(k_samples))
    rows = math.ceil(k_samples / cols)
    s = scale or auto_scale(h, w, target=128 if k_samples > 1 else 192)
    grid = _Canvas(rows, cols + 1, h, w, s)
    boxes = {"mean": grid.box(0, 0)}
    boxes.update({f"sample_{i + 1}": grid.box(i // cols, 1 + i % cols) for i in range(k_samples)})
    context_u8, mean_u8 = frames_to_uint8(fc.context), frames_to_uint8(fc.frames)
    samples_u8 = [frames_to_uint8(x) for x in fc.samples]
    total = t_ctx + fc.horizon
    frames, phases = [], []
    for t in range(total):
        phase = "context" if t < t_ctx else "predicted"
        k = t - t_ctx
        canvas = grid.new()
        shown = {"mean": context_u8[t] if phase == "context" else mean_u8[k]}
        for i in range(k_samples):
            shown[f"sample_{i + 1}"] = context_u8[t] if phase == "context" else samples_u8[i][k]
        for name, panel in shown.items():
            grid.paste(canvas, boxes[name], panel, PHASE_COLORS[phase])
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        titles = [(boxes["mean"], "context" if phase == "context" else "mean forecast", None)]
        titles += [(boxes[f"sample_{i + 1}"], f"sample {i + 1}", None) for i in range(k_samples)]
        grid.titles(draw, titles)
        label = _label(t, total, t_ctx, fc)
        if fc.temperature != 1.0:
            label += f"  temperature {fc.temperature:g}"
        grid.footer(draw, phase, label)
        frames.append(np.asarray(img))
        phases.append(phase)
    return SideBySide(np.stack(frames), boxes, s, (h, w), phases)


def _columns(n: int, most: int) -> list[int]:
    from framecast.viz.figures import pick_columns

    return pick_columns(n, most)


def _short(k: int, fps: float | None) -> str:
    return time_label(k, fps).replace("s", " s") if fps else time_label(k, fps)


def strip_figure(fc: Forecast, truth: Tensor | None = None, title: str = "", context_columns: int = 4,
                 forecast_columns: int = 8):
    """``forecast.png``: the last ``context_columns`` context frames then ``forecast_columns`` forecast frames
    (evenly spaced, always the first and last), titled with seconds from the last context frame; a truth row
    under the forecast where ``truth`` is known."""
    from framecast.viz.figures import plt, to_image
    from framecast.viz.style import CONTEXT_COLOR, PREDICTED_COLOR

    t_ctx = len(fc.context)
    ctx_idx = list(range(max(0, t_ctx - context_columns), t_ctx))
    fut_idx = _columns(fc.horizon, forecast_columns)
    known = 0 if truth is None else min(len(truth), fc.horizon)
    rows = 2 if known else 1
    cols = len(ctx_idx) + len(fut_idx)
    h, w = fc.frames.shape[-2:]
    fig, axes = plt.subplots(rows, cols, figsize=(1.15 * cols * w / h + 0.6, 1.25 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    grey = {"cmap": "gray", "vmin": 0, "vmax": 1, "interpolation": "nearest"}
    for j, t in enumerate(ctx_idx):
        axes[0, j].imshow(to_image(fc.context[t]), **grey)
        axes[0, j].set_title(_short(t - t_ctx + 1, fc.fps), fontsize=8, color=CONTEXT_COLOR)
        for side in axes[0, j].spines.values():
            side.set(visible=True, color=CONTEXT_COLOR, linewidth=2)
    for j, k in enumerate(fut_idx):
        col = len(ctx_idx) + j
        axes[0, col].imshow(to_image(fc.frames[k]), **grey)
        axes[0, col].set_title(_short(k + 1, fc.fps), fontsize=8, color=PREDICTED_COLOR)
        for side in axes[0, col].spines.values():
            side.set(visible=True, color=PREDICTED_COLOR, linewidth=2)
        if rows == 2:
            if k < known:
                axes[1, col].imshow(to_image(truth[k]), **grey)
            else:
                axes[1, col].text(0.5, 0.5, "past the\nvideo's end", ha="center", va="center", fontsize=7,
                                  transform=axes[1, col].transAxes)
    axes[0, 0].set_ylabel("context | forecast", fontsize=8)
    if rows == 2:
        axes[1, len(ctx_idx)].set_ylabel("truth", fontsize=8)
        for j in range(len(ctx_idx)):
            axes[1, j].set_visible(False)
    fig.suptitle(title or "context (blue) and forecast (orange), seconds from the last context frame", fontsize=9)
    return fig


def spread_figure(fc: Forecast, title: str = "", columns: int = 8):
    """``spread.png``: the mean forecast, the per-pixel standard deviation across the samples (mean over
    channels, colour bar in units of the [0, 1] frame) at evenly spaced steps, and the mean spread per step."""
    from framecast.viz.figures import plt, to_image
    from framecast.viz.style import ERROR_CMAP, PREDICTED_COLOR

    spread = fc.spread
    if spread is None:
        raise ValueError("the forecast has no samples (forecast(..., samples=K))")
    std = spread.float().mean(1)  # (T, H, W)
    idx = _columns(fc.horizon, columns)
    h, w = std.shape[-2:]
    vmax = max(float(std.max()), 1e-3)
    fig = plt.figure(figsize=(1.2 * len(idx) * w / h + 1.2, 4.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.1, 1.2])
    axes = top.subplots(2, len(idx), squeeze=False)
    image = None
    for j, k in enumerate(idx):
        axes[0, j].imshow(to_image(fc.frames[k]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title(_short(k + 1, fc.fps), fontsize=8)
        image = axes[1, j].imshow(std[k].numpy(), cmap=ERROR_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("mean", fontsize=8)
    axes[1, 0].set_ylabel("std", fontsize=8)
    top.colorbar(image, ax=axes[1, :].tolist(), shrink=0.9, label="std")
    ax = bottom.subplots()
    steps = np.arange(1, fc.horizon + 1)
    x = steps / fc.fps if fc.fps else steps
    ax.plot(x, std.flatten(1).mean(1).numpy(), color=PREDICTED_COLOR, marker="o" if fc.horizon <= 30 else None)
    ax.set_xlabel("seconds ahead" if fc.fps else "frames ahead", fontsize=8)
    ax.set_ylabel("mean std", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(title or f"where the model is unsure: per-pixel std across {len(fc.samples)} samples "
                 f"(temperature {fc.temperature:g})", fontsize=9)
    return fig
