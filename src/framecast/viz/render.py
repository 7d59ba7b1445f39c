"""Side-by-side video frames as uint8 arrays: truth | prediction | |error| panels, phase borders, labels.

:func:`side_by_side` draws the frames of a clip (Pillow, no matplotlib figure), :func:`clip_video` those of
one clip and its rollout; :class:`SideBySide` holds the frames and where each panel lies, so a test or a
notebook can read a panel back out of a decoded video. The colours are those of :mod:`framecast.viz.style`;
:func:`frames_to_uint8` is the one float -> uint8 conversion of every picture.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from framecast.viz.style import BEYOND_COLOR, CONTEXT_COLOR, ERROR_CMAP, PREDICTED_COLOR, rgb, time_label

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MISSING = (60, 60, 60)  # a panel with nothing to show
PHASE_COLORS = {"context": rgb(CONTEXT_COLOR), "predicted": rgb(PREDICTED_COLOR), "beyond": rgb(BEYOND_COLOR)}
PHASE_NAMES = {"context": "CONTEXT (model reads the truth)", "predicted": "PREDICTED (model reads its own output)",
               "beyond": "BEYOND THE TRAINED HORIZON ({} frames)"}


@functools.lru_cache(maxsize=1)
def magma_lut() -> np.ndarray:
    """The error colour map as a ``(256, 3)`` uint8 table."""
    import matplotlib

    return (matplotlib.colormaps[ERROR_CMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=32)
def font(size: int):
    """Pillow's default font at ``size`` points (the fixed bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def fit_font(draw: ImageDraw.ImageDraw, text: str, width: int, size: int):
    """The font of at most ``size`` points (at least 7) in which ``text`` fits ``width`` pixels."""
    for points in range(size, 7, -1):
        f = font(points)
        if draw.textlength(text, font=f) <= width:
            return f
    return font(7)


def frames_to_uint8(frames: Tensor) -> np.ndarray:
    """``(T, C, H, W)`` in [0, 1] -> ``(T, H, W, 3)`` uint8 (grey repeated into RGB)."""
    arr = (frames.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).numpy()
    arr = arr.transpose(0, 2, 3, 1)
    return np.repeat(arr, 3, axis=3) if arr.shape[3] == 1 else arr


@dataclass
class SideBySide:
    """Frames of a side-by-side video ``(T, H', W', 3)`` uint8 and where each panel lies:
    ``boxes[name] = (top, left)`` of the ``scale``-times upscaled ``(H, W)`` panel."""

    frames: np.ndarray
    boxes: dict[str, tuple[int, int]]
    scale: int
    size: tuple[int, int]
    phases: list[str]

    def panel(self, name: str) -> np.ndarray:
        """The panel ``name`` of every frame at its original size ``(T, H, W, 3)``: the centre pixel of each
        upscaled block."""
        top, left = self.boxes[name]
        h, w = self.size
        s = self.scale
        return self.frames[:, top + s // 2 : top + h * s : s, left + s // 2 : left + w * s : s]


def auto_scale(height: int, width: int, target: int = 192) -> int:
    """Nearest-neighbour upscale factor that brings the larger side to about ``target`` pixels."""
    return max(1, round(target / max(height, width)))


def _error_panels(truth: Tensor, shown: Tensor, valid: Tensor) -> np.ndarray | None:
    """``|shown - truth|`` averaged over channels, in the error colours, for the frames both have."""
    if not len(truth):
        return None
    k = min(len(truth), len(shown))
    diff = (torch.nan_to_num(shown[:k], nan=0.0).float().clamp(0, 1) - truth[:k].float().cpu()).abs().mean(1)
    err = magma_lut()[(diff * 255).round().clamp(0, 255).to(torch.long).numpy()]
    err[~valid[:k].numpy()] = BACKGROUND
    return err


def side_by_side(truth: Tensor, shown: Tensor, context_frames: int, trained_horizon: int | None = None,
                 scale: int | None = None, fps: float | None = None,
                 labels: tuple[str, str] = ("1-step prediction", "prediction")) -> SideBySide:
    """Render panels truth | prediction | |error| for every frame of a clip.

    ``truth (T_truth, C, H, W)`` is the whole clip as far as known (context then future), ``shown (T, C, H, W)``
    what the prediction panel shows at each frame (``NaN`` frames: nothing to show, e.g. frame 0); frames
    past ``T_truth`` show no truth and no error. Frames before ``context_frames`` are marked CONTEXT (blue
    border), later ones PREDICTED (orange) and, beyond ``context_frames + trained_horizon``, BEYOND THE
    TRAINED HORIZON (purple). ``labels``: the prediction panel's title during the context and after it.
    """
    total, _, h, w = shown.shape
    s = scale or auto_scale(h, w)
    ph, pw = h * s, w * s
    border, gap, margin = max(3, s), 10, 10
    header, footer = 26, 44
    width = margin * 2 + 3 * (pw + 2 * border) + 2 * gap
    height = header + ph + 2 * border + footer
    width += width % 2
    height += height % 2
    lefts = [margin + i * (pw + 2 * border + gap) + border for i in range(3)]
    top = header + border
    boxes = {"truth": (top, lefts[0]), "prediction": (top, lefts[1]), "error": (top, lefts[2])}
    truth_u8 = frames_to_uint8(truth)
    valid = ~torch.isnan(shown.flatten(1)).any(1)
    shown_u8 = frames_to_uint8(torch.nan_to_num(shown, nan=0.0))
    n_truth = len(truth)
    err = _error_panels(truth, shown, valid)
    small = font(11)
    lut = magma_lut()
    frames, phases = [], []
    for t in range(total):
        phase = "context" if t < context_frames else (
            "beyond" if trained_horizon is not None and t >= context_frames + trained_horizon else "predicted")
        phases.append(phase)
        color = PHASE_COLORS[phase]
        canvas = np.empty((height, width, 3), np.uint8)
        canvas[:] = BACKGROUND
        panels = [truth_u8[t] if t < n_truth else None, shown_u8[t] if valid[t] else None,
                  err[t] if err is not None and t < n_truth and valid[t] else None]
        for left, panel in zip(lefts, panels):
            canvas[top - border : top + ph + border, left - border : left + pw + border] = color
            if panel is None:
                canvas[top : top + ph, left : left + pw] = MISSING
            else:
                canvas[top : top + ph, left : left + pw] = np.repeat(np.repeat(panel, s, 0), s, 1)
        y = top + ph + border + footer // 2
        bx = lefts[2] + pw + border
        if pw >= 120:  # colour bar of the error panel, 0 .. 1, right aligned under it (where there is room)
            bar_w, bar_h = min(pw // 2, 100), 8
            bx, by = lefts[2] + pw - bar_w - 14, y - bar_h // 2
            canvas[by : by + bar_h, bx : bx + bar_w] = lut[np.linspace(0, 255, bar_w).astype(int)][None]
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        titles = ["truth", labels[0] if phase == "context" else labels[1], "|error|"]
        for left, text in zip(lefts, titles):
            draw.text((left + pw // 2, header // 2 + 1), text, fill=TEXT, font=fit_font(draw, text, pw + gap, 15),
                      anchor="mm")
        missing = ["no truth", "no prediction yet", "no truth" if t >= n_truth else "no prediction"]
        for left, panel, what in zip(lefts, panels, missing):
            if panel is None:
                draw.text((left + pw // 2, top + ph // 2), what, fill=TEXT, font=fit_font(draw, what, pw - 8, 14),
                          anchor="mm")
        if pw >= 120:
            draw.text((bx - 4, y), "0", fill=TEXT, font=small, anchor="rm")
            draw.text((bx + bar_w + 4, y), "1", fill=TEXT, font=small, anchor="lm")
        label = f"frame {t + 1}/{total}  {time_label(t - context_frames + 1, fps)}"
        name = PHASE_NAMES[phase].format(trained_horizon)
        x_name = lefts[1] - border
        draw.text((margin, y), label, fill=TEXT, font=fit_font(draw, label, x_name - margin - 6, 14), anchor="lm")
        draw.text((x_name, y), name, fill=color, font=fit_font(draw, name, bx - 16 - x_name, 14), anchor="lm")
        frames.append(np.asarray(img))
    return SideBySide(np.stack(frames), boxes, s, (h, w), phases)


def clip_video(context: Tensor, future: Tensor, steps: Tensor, trained_horizon: int | None = None,
               scale: int | None = None, fps: float | None = None,
               labels: tuple[str, str] = ("1-step prediction", "prediction")) -> SideBySide:
    """The side-by-side video of one clip and its rollout.

    ``context (T_ctx, C, H, W)`` and ``future (T_f, C, H, W)``: the truth (``future`` as far as known);
    ``steps (T_ctx + horizon - 1, C, H, W)``: the rollout's frames of this clip (``Rollout.frames[i]``, step
    ``s`` predicts frame ``s + 1``): the model's one-step predictions during the context (nothing at frame 1;
    ``NaN`` frames: none, e.g. a baseline's) and its rollout after.
    """
    c, h, w = context.shape[1:]
    shown = torch.cat([torch.full((1, c, h, w), float("nan")), steps.float().cpu()])
    truth = torch.cat([context, future]).cpu()
    return side_by_side(truth, shown, len(context), trained_horizon=trained_horizon, scale=scale, fps=fps,
                        labels=labels)
