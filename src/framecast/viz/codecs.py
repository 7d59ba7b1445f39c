"""Writing videos and reading them back: MP4 (H.264 where PyAV has it) and GIF with one palette.

Frames are ``(T, H, W, 3)`` uint8 arrays, e.g. :attr:`framecast.viz.render.SideBySide.frames`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from framecast.viz.render import BACKGROUND, MISSING, PHASE_COLORS, TEXT, magma_lut


def h264_available() -> bool:
    """Whether the installed PyAV can encode H.264 (libx264)."""
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


def gif_palette(frames: np.ndarray, grey: bool | None = None) -> np.ndarray:
    """One palette ``(256, 3)`` uint8 for the whole animation. Fixed entries for what
    :func:`~framecast.viz.render.side_by_side` draws (the error colour map, the phase colours, background and
    text); the rest for the content (every other pixel): grey content (R = G = B) gets every second grey
    level, so grey panels stay within one 8-bit level; colour content a median-cut palette of its pixels in
    all frames. ``grey=None``: grey if most content pixels are."""
    ui = np.array([*PHASE_COLORS.values(), BACKGROUND, TEXT, MISSING], np.uint8)
    lut = magma_lut()
    sample = frames[:, ::2, ::2].reshape(-1, 3)
    drawn = np.concatenate([lut, ui]).astype(np.int32)
    packed = (sample[:, 0].astype(np.int32) << 16) | (sample[:, 1].astype(np.int32) << 8) | sample[:, 2]
    content = sample[~np.isin(packed, (drawn[:, 0] << 16) | (drawn[:, 1] << 8) | drawn[:, 2])]
    if len(content) == 0:
        content = sample
    if grey is None:
        grey = bool(((content[:, 0] == content[:, 1]) & (content[:, 1] == content[:, 2])).mean() > 0.8)
    if grey:
        levels = np.round(np.linspace(0, 255, 128)).astype(np.uint8)
        pal = np.concatenate([np.stack([levels] * 3, 1), lut[np.linspace(0, 255, 96).round().astype(int)], ui])
    else:
        fixed = np.concatenate([lut[np.linspace(0, 255, 48).round().astype(int)], ui])
        img = Image.fromarray(content[None]).quantize(colors=256 - len(fixed), method=Image.Quantize.MEDIANCUT,
                                                      dither=Image.Dither.NONE)
        colors = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)[: 256 - len(fixed)]
        pal = np.concatenate([colors, fixed])
    return np.concatenate([pal, np.repeat(pal[-1:], 256 - len(pal), 0)])


def to_palette(frame: np.ndarray, palette: np.ndarray) -> np.ndarray:
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
    palette = gif_palette(frames, grey)
    flat = palette.reshape(-1).tolist()
    images = []
    for f in frames:
        img = Image.frombytes("P", (f.shape[1], f.shape[0]), to_palette(f, palette).tobytes())
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
