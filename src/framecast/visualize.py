"""``framecast visualize``: pictures and videos of what a trained model knows.

    framecast visualize --ckpt CKPT [--config FILE | --video PATH] --out DIR [--clips N]
                        [--dream-factor K] [--split test] [--curve-clips M] [--fps F] [--scale S]

For the first ``N`` clips of the split it writes

* ``comparison_<i>.png``: context, ground truth, prediction and absolute error over time;
* ``side_by_side_<i>.mp4`` (H.264, yuv420p) and ``side_by_side_<i>.gif``: truth | prediction | error, the
  whole clip; a blue border and the word CONTEXT mark the frames the model was given (its prediction panel
  then shows its one-step prediction from the true frames before), an orange border and PREDICTED the
  frames it rolled out on its own;
* ``surprise_<i>.png``: per-pixel bits of the true frame under the model's distribution (models with a
  ``logistic_mixture`` head), else the per-pixel squared error;
* ``hidden_<i>.png``: the top recurrent layer's state at every step, projected on its first three principal
  components (fitted on that clip) as RGB;
* ``dream_<i>.mp4``: a rollout ``K`` times the trained horizon beside the truth while the data has it (a
  purple border marks the frames beyond the trained horizon);

and ``curves.png``: ``mse_frame`` and SSIM per frame ahead for the model and the copy-last baseline,
averaged over the first ``M`` clips of the split. Data: ``--config`` (the ``data:`` section of a fit config),
``--video`` (clips of a video file or folder, cut like the model's training clips) or, with neither, the data
module saved in the checkpoint. Every function here takes plain tensors, so a notebook can call them.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from tqdm.auto import tqdm

from framecast import loading, plots
from framecast.loading import (
    batches,
    datamodule_for_video,
    datamodule_from_config,
    load_module,
    rebuild,
    saved_data_args,
    shrink,
)
from framecast.metrics import PIXEL_METRICS

SPLITS = ("train", "val", "test")
CURVE_METRICS = ("mse_frame", "ssim")
DEFAULT_PLAYBACK_FPS = 4.0  # for data without a frame rate (moving digits): slow enough to follow


# --- data ----------------------------------------------------------------------------------------------


def loader(dm, split: str = "test"):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    # the stage whose split checks cover only this split ("predict": none, for train; an empty train split
    # then fails in first_clips), so a video too short for a val clip can still show its training clips
    dm.setup({"train": "predict", "val": "validate", "test": "test"}[split])
    return getattr(dm, f"{split}_dataloader")()


def first_clips(dm, n: int, split: str = "test") -> tuple[Tensor, Tensor]:
    """The first ``n`` clips of ``split``: ``context (n, T_ctx, C, H, W)``, ``target (n, T_pred, C, H, W)``
    (fewer where the split has fewer)."""
    parts = list(batches(loader(dm, split), n))
    if not parts:
        raise ValueError(f"the {split} split has no clips")
    return torch.cat([b["context"] for b in parts]), torch.cat([b["target"] for b in parts])


def datamodule_from_checkpoint(ckpt: str | Path, saved: dict[str, Any] | None = None):
    """The data module a checkpoint was trained on (:func:`framecast.loading.datamodule_from_checkpoint`),
    without loader processes: for a few clips of pictures they cost more than they save."""
    saved = saved_data_args(ckpt) if saved is None else saved
    return loading.datamodule_from_checkpoint(ckpt, saved, **({"num_workers": 0} if "num_workers" in saved else {}))


def build_datamodule(args: argparse.Namespace, module):
    if args.config:
        return datamodule_from_config(args.config)
    if args.video:
        return datamodule_for_video(args.video, like=module)
    return datamodule_from_checkpoint(args.ckpt, getattr(module, "data_hparams", None))


# --- inference ----------------------------------------------------------------------------------------


@dataclass
class ClipRollout:
    """One model run over clips, on the CPU, frames clamped to [0, 1].

    ``steps (N, S, C, H, W)``: output of every recurrent step (``S = T_ctx + horizon - 1``; step ``s`` read
    frame ``s`` and predicts frame ``s + 1``); ``inputs`` the frames read; ``params (N, S, P, H, W)`` of a
    distribution head or None; ``hidden (N, S, F, h, w)`` the top layer's state.
    """

    context: Tensor
    steps: Tensor
    inputs: Tensor
    params: Tensor | None
    hidden: Tensor | None
    horizon: int

    def prediction(self) -> Tensor:
        return self.steps[:, -self.horizon :]

    def prediction_params(self) -> Tensor | None:
        return None if self.params is None else self.params[:, -self.horizon :]

    def one_step(self) -> Tensor:
        """Predictions of context frames ``1 .. T_ctx - 1`` from the true frames before each."""
        return self.steps[:, : self.context.shape[1] - 1]


def run_model(module, context: Tensor, horizon: int, hidden: bool = True) -> ClipRollout:
    """Roll the model out ``horizon`` frames from ``context`` under ``torch.inference_mode()``."""
    model = module.model if hasattr(module, "model") else module
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        roll = model.rollout(context.to(device), horizon, return_hidden=hidden)
    model.train(was_training)
    steps = roll.frames.float().clamp(0, 1).cpu()
    ctx = context.cpu()
    inputs = torch.cat([ctx, steps[:, ctx.shape[1] - 1 : -1]], 1)
    return ClipRollout(
        context=ctx,
        steps=steps,
        inputs=inputs,
        params=None if roll.params is None else roll.params.float().cpu(),
        hidden=None if roll.hidden is None else roll.hidden.float().cpu(),
        horizon=horizon,
    )


def surprise_maps(module, roll: ClipRollout, target: Tensor) -> tuple[Tensor, str, str]:
    """Per-pixel surprise of the true future frames ``(N, T, H, W)``, its unit (short, for a colour bar) and
    what it is (a sentence): bits of the 8-bit truth under the model's distribution (``-log2 p``, summed
    over channels) when the model has one, else the squared error summed over channels."""
    head = getattr(getattr(module, "model", module), "head", None)
    params = roll.prediction_params()
    if params is not None and hasattr(head, "bits"):
        with torch.inference_mode():
            device = next(head.parameters()).device
            bits = head.bits(params.to(device), target.to(device)).float().cpu()
        what = ("surprise = bits of the true 8-bit pixel under the model's distribution (-log2 p), "
                "\u03a3 = bits of the frame")
        return bits.sum(2), "bits / pixel", what
    sq = (roll.prediction() - target.cpu().float()).pow(2).sum(2)
    what = ("surprise = squared error per pixel (the model has no per-pixel distribution), "
            "\u03a3 = mse_frame")
    return sq, "squared error\n/ pixel", what


def pca_rgb(hidden: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Project ``hidden (S, F, h, w)`` on its first ``k`` principal components over all steps and positions.

    Deterministic: the components come from ``torch.linalg.eigh`` of the feature covariance (float64), each
    signed so that its largest-magnitude loading is positive. Each component is mapped to [0, 1] by its
    1st..99th percentile over the clip (clipped), so colours mean the same at every step.
    Returns ``(S, k, h, w)`` in [0, 1] and the fraction of the variance each component explains ``(k,)``
    (zeros for components beyond the number of features).
    """
    s, f, h, w = hidden.shape
    x = hidden.detach().double().cpu().permute(0, 2, 3, 1).reshape(-1, f)
    x = x - x.mean(0)
    cov = x.T @ x / max(1, len(x) - 1)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(vals, descending=True)
    vals, vecs = vals[order].clamp(min=0), vecs[:, order]
    m = min(k, f)
    vecs = vecs[:, :m]
    top = vecs.abs().argmax(0)
    sign = torch.sign(vecs[top, torch.arange(m)])
    vecs = vecs * torch.where(sign == 0, torch.ones_like(sign), sign)
    proj = x @ vecs  # (S*h*w, m)
    lo = torch.quantile(proj, 0.01, dim=0)
    hi = torch.quantile(proj, 0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)
    if m < k:
        proj = torch.cat([proj, torch.zeros(len(proj), k - m, dtype=proj.dtype)], 1)
    total = float(vals.sum())
    explained = torch.zeros(k, dtype=torch.float64)
    if total > 0:
        explained[:m] = vals[:m] / total
    return proj.reshape(s, h, w, k).permute(0, 3, 1, 2).float(), explained.float()


def error_curves(module, dataloader, max_clips: int = 256, progress: bool | None = None
                 ) -> tuple[dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], int]:
    """``{"model" | "copy_last": {metric: (mean per frame ahead, standard error)}}`` over the first
    ``max_clips`` clips of ``dataloader``, and the number of clips used."""
    from framecast.models import CopyLast

    per_clip: dict[str, dict[str, list[Tensor]]] = {w: {m: [] for m in CURVE_METRICS} for w in ("model", "copy_last")}
    seen = 0
    with tqdm(total=max_clips, desc="error curves", unit="clip", leave=False, disable=progress is False) as bar:
        for batch in batches(dataloader, max_clips):
            context, target = batch["context"], batch["target"]
            pred = run_model(module, context, target.shape[1], hidden=False).prediction()
            for who, p in (("model", pred), ("copy_last", CopyLast()(context, target.shape[1]))):
                for m in CURVE_METRICS:
                    per_clip[who][m].append(PIXEL_METRICS[m](p, target).double())
            seen += len(context)
            bar.update(len(context))
    out = {}
    for who, metrics in per_clip.items():
        out[who] = {}
        for m, parts in metrics.items():
            v = torch.cat(parts)  # (N, T)
            sem = v.std(0) / math.sqrt(len(v)) if len(v) > 1 else torch.zeros(v.shape[1], dtype=v.dtype)
            out[who][m] = (v.mean(0).numpy(), sem.numpy())
    return out, seen


# --- videos -------------------------------------------------------------------------------------------


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))


BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MISSING = (60, 60, 60)  # a panel with nothing to show
PHASE_COLORS = {"context": _rgb(plots.CONTEXT_COLOR), "predicted": _rgb(plots.PREDICTED_COLOR),
                "beyond": _rgb(plots.BEYOND_COLOR)}
_MAGMA: np.ndarray | None = None  # the error colour map as a (256, 3) uint8 table, filled lazily


def _magma_lut() -> np.ndarray:
    global _MAGMA
    if _MAGMA is None:
        import matplotlib

        _MAGMA = (matplotlib.colormaps[plots.ERROR_CMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return _MAGMA


@functools.lru_cache(maxsize=32)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int):
    """The font of at most ``size`` points (at least 7) in which ``text`` fits ``width`` pixels."""
    for points in range(size, 7, -1):
        font = _font(points)
        if draw.textlength(text, font=font) <= width:
            return font
    return _font(7)


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
    err = None
    if n_truth:
        k = min(n_truth, total)
        diff = (torch.nan_to_num(shown[:k], nan=0.0).float().clamp(0, 1) - truth[:k].float().cpu()).abs().mean(1)
        err = _magma_lut()[(diff * 255).round().clamp(0, 255).to(torch.long).numpy()]
        err[~valid[:k].numpy()] = BACKGROUND
    small = _font(11)
    lut = _magma_lut()
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
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        titles = ["truth", labels[0] if phase == "context" else labels[1], "|error|"]
        for left, text in zip(lefts, titles):
            draw.text((left + pw // 2, header // 2 + 1), text, fill=TEXT, font=_fit(draw, text, pw + gap, 15),
                      anchor="mm")
        missing = ["no truth", "no prediction yet", "no truth" if t >= n_truth else "no prediction"]
        for left, panel, what in zip(lefts, panels, missing):
            if panel is None:
                draw.text((left + pw // 2, top + ph // 2), what, fill=TEXT, font=_fit(draw, what, pw - 8, 14),
                          anchor="mm")
        k = t - context_frames + 1
        when = plots.time_label(k, fps)
        name = {"context": "CONTEXT (model reads the truth)", "predicted": "PREDICTED (model reads its own output)",
                "beyond": f"BEYOND THE TRAINED HORIZON ({trained_horizon} frames)"}[phase]
        y = top + ph + border + footer // 2
        bx = lefts[2] + pw + border
        if pw >= 120:  # colour bar of the error panel, 0 .. 1, right aligned under it (where there is room)
            bar_w, bar_h = min(pw // 2, 100), 8
            bx, by = lefts[2] + pw - bar_w - 14, y - bar_h // 2
            canvas = np.asarray(img).copy()
            canvas[by : by + bar_h, bx : bx + bar_w] = lut[np.linspace(0, 255, bar_w).astype(int)][None]
            img = Image.fromarray(canvas)
            draw = ImageDraw.Draw(img)
            draw.text((bx - 4, y), "0", fill=TEXT, font=small, anchor="rm")
            draw.text((bx + bar_w + 4, y), "1", fill=TEXT, font=small, anchor="lm")
        label = f"frame {t + 1}/{total}  {when}"
        x_name = lefts[1] - border
        draw.text((margin, y), label, fill=TEXT, font=_fit(draw, label, x_name - margin - 6, 14), anchor="lm")
        draw.text((x_name, y), name, fill=color, font=_fit(draw, name, bx - 16 - x_name, 14), anchor="lm")
        frames.append(np.asarray(img))
    return SideBySide(np.stack(frames), boxes, s, (h, w), phases)


def h264_available() -> bool:
    try:
        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # noqa: BLE001  (av raises UnknownCodecError or ValueError by version)
        return False


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> tuple[Path, str]:
    """Write ``(T, H, W, 3)`` uint8 frames (even ``H, W``) as MP4: H.264 (libx264, yuv420p, CRF 18) where the
    installed PyAV has it, else MPEG-4 part 2. Returns the path and the codec used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if h264_available() else "mpeg4"
    rate = Fraction(fps).limit_denominator(1001)
    _, h, w, _ = frames.shape
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        options = {"crf": "18", "preset": "medium"} if codec == "libx264" else {"qscale": "2"}
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path, codec


def _gif_palette(frames: np.ndarray, grey: bool | None = None) -> np.ndarray:
    """One palette ``(256, 3)`` uint8 for the whole animation. Fixed entries for what :func:`side_by_side`
    draws (the error colour map, the phase colours, background and text); the rest for the content (every
    other pixel): grey content (R = G = B) gets every second grey level, so grey panels stay within one
    8-bit level; colour content a median-cut palette of its pixels in all frames. ``grey=None``: grey if
    most content pixels are."""
    ui = np.array([*PHASE_COLORS.values(), BACKGROUND, TEXT, MISSING], np.uint8)
    sample = frames[:, ::2, ::2].reshape(-1, 3)
    drawn = np.concatenate([_magma_lut(), ui]).astype(np.int32)
    packed = (sample[:, 0].astype(np.int32) << 16) | (sample[:, 1].astype(np.int32) << 8) | sample[:, 2]
    content = sample[~np.isin(packed, (drawn[:, 0] << 16) | (drawn[:, 1] << 8) | drawn[:, 2])]
    if len(content) == 0:
        content = sample
    if grey is None:
        grey = bool(((content[:, 0] == content[:, 1]) & (content[:, 1] == content[:, 2])).mean() > 0.8)
    if grey:
        levels = np.round(np.linspace(0, 255, 128)).astype(np.uint8)
        pal = np.concatenate([np.stack([levels] * 3, 1), _magma_lut()[np.linspace(0, 255, 96).round().astype(int)], ui])
    else:
        fixed = np.concatenate([_magma_lut()[np.linspace(0, 255, 48).round().astype(int)], ui])
        img = Image.fromarray(content[None]).quantize(colors=256 - len(fixed), method=Image.Quantize.MEDIANCUT,
                                                      dither=Image.Dither.NONE)
        colors = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)[: 256 - len(fixed)]
        pal = np.concatenate([colors, fixed])
    return np.concatenate([pal, np.repeat(pal[-1:], 256 - len(pal), 0)])


def _to_palette(frame: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Indices ``(H, W)`` of the nearest palette colour (exact Euclidean search, no dithering)."""
    packed = (frame[..., 0].astype(np.int32) << 16) | (frame[..., 1].astype(np.int32) << 8) | frame[..., 2]
    unique, inverse = np.unique(packed.ravel(), return_inverse=True)
    colors = np.stack([unique >> 16, (unique >> 8) & 255, unique & 255], 1).astype(np.int32)
    pal = palette.astype(np.int32)
    nearest = np.empty(len(colors), np.uint8)
    for a in range(0, len(colors), 2048):
        d = ((colors[a : a + 2048, None, :] - pal[None]) ** 2).sum(-1)
        nearest[a : a + 2048] = d.argmin(1)
    return nearest[inverse].reshape(frame.shape[:2])


def write_gif(frames: np.ndarray, path: str | Path, fps: float, grey: bool | None = None) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as a looping GIF with one palette for all frames, no dithering.

    ``grey``: whether the content is grey (then it is kept within one 8-bit level); None: guess."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette = _gif_palette(frames, grey)
    flat = palette.reshape(-1).tolist()
    images = []
    for f in frames:
        img = Image.frombytes("P", (f.shape[1], f.shape[0]), _to_palette(f, palette).tobytes())
        img.putpalette(flat)
        images.append(img)
    duration = max(20, round(1000 / fps / 10) * 10)  # GIF delays are in 1/100 s
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False,
                   disposal=1)
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video or GIF with PyAV into ``(T, H, W, 3)`` uint8."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# --- everything for a set of clips ----------------------------------------------------------------------


def clip_video(context: Tensor, target: Tensor, roll: ClipRollout, i: int, trained_horizon: int | None = None,
               scale: int | None = None, fps: float | None = None) -> SideBySide:
    """The side-by-side video of clip ``i``: the whole clip (context then future) as truth, the model's
    one-step predictions during the context (nothing at frame 1) and its rollout after."""
    c, h, w = context.shape[2:]
    blank = torch.full((1, c, h, w), float("nan"))
    shown = torch.cat([blank, roll.one_step()[i], roll.prediction()[i]])
    truth = torch.cat([context[i], target[i]]).cpu()
    return side_by_side(truth, shown, context.shape[1], trained_horizon=trained_horizon, scale=scale, fps=fps)


def dream_clips(dm, horizon: int, clips: int, split: str) -> tuple[Tensor, Tensor] | None:
    """The first ``clips`` clips of ``split`` with ``horizon`` future frames each (``dm`` rebuilt with that
    horizon), or None where the data cannot make clips that long. Moving digits give the same clips as
    ``dm``, only longer; videos may cut their clips elsewhere."""
    try:
        long = shrink(rebuild(dm, horizon_frames=horizon), split, clips)
        context, target = first_clips(long, clips, split)
    except Exception:  # noqa: BLE001  (too short videos, no clips in the split...: fall back)
        return None
    return (context, target) if target.shape[1] == horizon and len(target) == clips else None


def visualize(module, dm, out: str | Path, clips: int = 4, dream_factor: int = 4, split: str = "test",
              curve_clips: int = 128, playback_fps: float | None = None, scale: int | None = None,
              progress: bool | None = None, log=print) -> list[Path]:
    """Write every picture and video of ``framecast visualize`` for the first ``clips`` clips of ``split`` of
    ``dm`` into ``out``; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if clips < 1 or dream_factor < 1 or curve_clips < 1:
        raise ValueError("clips, dream_factor and curve_clips must be >= 1")
    data_fps = getattr(dm, "fps", None)
    play = playback_fps or data_fps or DEFAULT_PLAYBACK_FPS
    hp = getattr(module, "hparams", {})
    name = hp.get("model", type(module).__name__)
    written: list[Path] = []
    bar = tqdm(total=1 + 6 * clips, desc="visualize", unit="file", disable=progress is False)

    def done(path: Path) -> None:
        written.append(path)
        bar.update(1)

    dm = shrink(dm, split, max(clips, curve_clips))
    context, target = first_clips(dm, clips, split)
    n = len(context)
    t_ctx, horizon = context.shape[1], target.shape[1]
    roll = run_model(module, context, horizon)

    curves, used = error_curves(module, loader(dm, split), curve_clips, progress)
    fig = plots.curves_figure(curves, fps=data_fps, labels={"model": f"model ({name})"},
                              title=f"error per frame ahead, mean \u00b1 standard error over the first {used} "
                                    f"{split} clips")
    done(plots.save(fig, out / "curves.png"))

    dream_len = dream_factor * horizon
    long = dream_clips(dm, dream_len, n, split) if dream_factor > 1 else None
    if long is None:
        long = (context, target)
        if dream_factor > 1:
            log(f"note: the {split} split has no {n} clips of {t_ctx + dream_len} frames; the dreams show the "
                f"truth for the first {horizon} predicted frames only")
    dream = run_model(module, long[0], dream_len, hidden=False)
    notes = set()
    surprise, unit, what = surprise_maps(module, roll, target)
    for i in range(n):
        title = f"{name}, {split} clip {i}"
        fig = plots.comparison_figure(context[i], target[i], roll.prediction()[i], title=title, fps=data_fps)
        done(plots.save(fig, out / f"comparison_{i}.png"))

        video = clip_video(context, target, roll, i, scale=scale, fps=data_fps)
        path, codec = write_mp4(video.frames, out / f"side_by_side_{i}.mp4", play)
        if codec != "libx264":
            notes.add(f"note: this PyAV has no libx264 encoder; the MP4 files are MPEG-4 part 2 ({codec})")
        done(path)
        done(write_gif(video.frames, out / f"side_by_side_{i}.gif", play, grey=context.shape[2] == 1))

        fig = plots.surprise_figure(target[i], roll.prediction()[i], surprise[i], unit, title=f"{title}\n{what}",
                                    fps=data_fps)
        done(plots.save(fig, out / f"surprise_{i}.png"))

        if roll.hidden is not None:
            rgb, explained = pca_rgb(roll.hidden[i])
            fig = plots.hidden_figure(roll.inputs[i], rgb, roll.steps[i], t_ctx, title=title,
                                      explained=explained.tolist(), fps=data_fps)
            done(plots.save(fig, out / f"hidden_{i}.png"))
        else:
            bar.update(1)

        truth = torch.cat([long[0][i], long[1][i]])
        c, h, w = context.shape[2:]
        shown = torch.cat([torch.full((1, c, h, w), float("nan")), dream.steps[i]])
        video = side_by_side(truth, shown, t_ctx, trained_horizon=horizon, scale=scale, fps=data_fps,
                             labels=("1-step prediction", "dream"))
        done(write_mp4(video.frames, out / f"dream_{i}.mp4", play)[0])
    bar.close()
    for note in sorted(notes):
        log(note)
    return written


# --- command line -------------------------------------------------------------------------------------


EPILOG = """files written to --out, for each clip i:
  comparison_<i>.png     context / truth / prediction / |error| over time
  side_by_side_<i>.mp4   truth | prediction | |error| video (H.264), and the same as
  side_by_side_<i>.gif   an animated GIF; blue CONTEXT frames, orange PREDICTED frames
  surprise_<i>.png       per-pixel bits under the model's distribution, else squared error
  hidden_<i>.png         top recurrent layer's state, first 3 principal components as RGB
  dream_<i>.mp4          a rollout --dream-factor times the trained horizon beside the truth
and curves.png: mse_frame and SSIM per frame ahead, model vs. copy-last baseline."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framecast visualize",
        description="Pictures and videos of what a trained model knows: comparison grids, side-by-side videos "
                    "(MP4 and GIF), error curves against copy-last, surprise maps, the hidden state and a long "
                    "'dream' rollout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of `framecast fit`")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--config", help="fit config whose data: section gives the clips "
                                       "(default: the data module saved in the checkpoint)")
    data.add_argument("--video", help="video file or folder: clips cut like the model's training clips")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--clips", type=int, default=4, help="clips to draw: the first N of the split (default: 4)")
    parser.add_argument("--dream-factor", type=int, default=4,
                        help="the dream rolls out this many times the trained horizon (default: 4)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split the clips come from (default: test)")
    parser.add_argument("--curve-clips", type=int, default=128,
                        help="the error curves average over the first M clips of the split (default: 128)")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"playback rate of the videos (default: the data's fps, else {DEFAULT_PLAYBACK_FPS:g})")
    parser.add_argument("--scale", type=int, default=None,
                        help="nearest-neighbour upscale of the video panels (default: to about 192 pixels)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto, cuda where available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast visualize`` with ``argv`` (without the command name); return the exit code."""
    args = build_parser().parse_args(argv)
    for flag in ("clips", "dream_factor", "curve_clips"):
        if getattr(args, flag) < 1:
            print(f"framecast visualize: --{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        module = load_module(args.ckpt, map_location=device)
        dm = build_datamodule(args, module)
    except (FileNotFoundError, ValueError) as e:
        print(f"framecast visualize: {e}", file=sys.stderr)
        return 1
    torch.manual_seed(0)  # shuffled (training) loaders give the same clips on every run
    try:
        written = visualize(module, dm, args.out, clips=args.clips, dream_factor=args.dream_factor,
                            split=args.split, curve_clips=args.curve_clips, playback_fps=args.fps, scale=args.scale)
    except ValueError as e:  # e.g. a split with no clips
        print(f"framecast visualize: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
