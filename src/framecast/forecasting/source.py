"""The frames a forecast starts from: a video decoded the way a checkpoint's training clips were.

* :func:`frame_settings`: the decoding (fps, size, crop, channels) and the context and trained horizon lengths
  of a module, from the data args its checkpoint saved (:func:`framecast.loading.video_clip_settings`), with
  overrides applied; a checkpoint without a frame rate (moving digits) decodes at ``fps`` where given, else
  every frame of the video at its native rate (:attr:`FrameSettings.notes` says which);
* :func:`read_video`: every frame of a file, ``(N, C, H, W)`` uint8, through :mod:`framecast.data.decode`;
* :func:`video_clip`: both, and the context window that ends at ``at`` seconds (default: the end of the video)
  as a :class:`VideoClip`.

The window: decoded frame ``k`` is at ``k / fps`` seconds. The context is the ``T_ctx`` frames before ``at``
(frames ``e - T_ctx .. e - 1`` with ``e = round(at * fps)``), so the first forecast frame is frame ``e``, at
``at``; with ``at`` at the end of the video (``N / fps``) the forecast starts just past its last frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from framecast.errors import ConfigError, InputError

DEFAULT_LENGTH = 10  # context / horizon frames where nothing gives them (as framecast.loading does)


@dataclass(frozen=True)
class FrameSettings:
    """How to decode a video for a module and how long its windows are.

    ``decode``: a :class:`~framecast.data.decode.DecodeSettings`; ``context_frames``: frames the model reads;
    ``horizon_frames``: the horizon it was trained on (the default forecast length); ``notes``: what a user
    should know about the choice (e.g. the native frame rate used)."""

    decode: Any
    context_frames: int
    horizon_frames: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def _channels_of(module) -> int | None:
    hp = getattr(module, "hparams", None) or {}
    channels = hp.get("channels") if hasattr(hp, "get") else None
    if channels is None:
        channels = getattr(getattr(module, "model", module), "channels", None)
    return None if channels is None else int(channels)


def _frames(name: str, args: dict[str, Any], fps: float | None, where: str) -> int:
    from framecast.data.clips import seconds_to_frames

    if args.get(f"{name}_frames") is not None:
        n = int(args[f"{name}_frames"])
    elif args.get(f"{name}_seconds") is not None:
        if not fps:
            raise ConfigError(f"{where}: {name}_seconds needs a frame rate; give {name}_frames or --fps")
        n = seconds_to_frames(float(args[f"{name}_seconds"]), fps)
    else:
        n = DEFAULT_LENGTH
    if n < 1:
        raise ConfigError(f"{where}: {name}_frames must be >= 1, got {n}")
    return n


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [float(x) for x in a] != [float(x) for x in b]
    try:
        return float(a) != float(b)
    except (TypeError, ValueError):
        return a != b


def frame_settings(module, data_args: dict[str, Any] | None = None, fps: float | None = None,
                   overrides: dict[str, Any] | None = None, checkpoint: str | None = None,
                   overrides_from: str = "--data.init_args") -> FrameSettings:
    """The :class:`FrameSettings` of ``module``.

    ``data_args``: the data module args of its training (default: ``module.data_hparams``, which
    :func:`framecast.loading.load_module` sets); ``overrides``: data options asked for (``fps``, ``size``,
    ``crop``, ``channels``, ``context_frames`` / ``_seconds``, ``horizon_frames`` / ``_seconds``; frames replace
    seconds and the other way round), named ``overrides_from`` in messages; ``fps``: the frame rate to decode at
    (``--fps``), over the saved one. Channels asked for that differ from the model's are an :class:`InputError`
    naming both."""
    from framecast.data.decode import DecodeSettings
    from framecast.loading import video_clip_settings

    what = f"checkpoint {checkpoint}" if checkpoint else "the model"
    saved = dict(data_args if data_args is not None else (getattr(module, "data_hparams", None) or {}))
    args = video_clip_settings(saved)
    overrides = dict(overrides or {})
    if "canvas" in overrides and "size" not in overrides:  # a moving digits config's frame size
        overrides["size"] = [overrides["canvas"]] * 2
    for name in ("context", "horizon"):
        for given, other in (("frames", "seconds"), ("seconds", "frames")):
            if overrides.get(f"{name}_{given}") is not None:
                args.pop(f"{name}_{other}", None)
    notes = [f"note: {overrides_from} sets {k} {v} ({what} was trained with {args[k]})"
             for k, v in sorted(overrides.items()) if k in args and _differs(args[k], v)]
    args.update({k: v for k, v in overrides.items() if k != "canvas"})
    model_channels = _channels_of(module)
    asked = args.get("channels")
    if asked is not None and model_channels is not None and int(asked) != model_channels:
        source = f"{overrides_from}.channels {asked}" if "channels" in overrides else f"{what}'s data (channels {asked})"
        raise InputError(f"{source} asks for {int(asked)}-channel frames, but {what} was trained on "
                         f"{model_channels}-channel frames ({'grey' if model_channels == 1 else 'RGB'}); "
                         f"leave channels out or give {model_channels}")
    channels = int(asked if asked is not None else (model_channels or 1))
    size = args.get("size")
    if size is None:
        raise ConfigError(f"{what} saves no frame size: give {overrides_from}.size H W (the size it was trained on)")
    if fps is not None:
        if not fps > 0:
            raise ConfigError(f"--fps must be > 0, got {fps}")
        if args.get("fps") and float(args["fps"]) != float(fps):
            notes.append(f"note: decoding at --fps {fps:g}; {what} was trained at {float(args['fps']):g} fps")
        args["fps"] = fps
    elif args.get("fps") is None:
        notes.append(f"note: {what} was trained without a frame rate (e.g. moving digits, time in frames): "
                     f"every frame of the video is used, at its native rate; give --fps F to resample")
    try:
        decode = DecodeSettings(fps=args.get("fps"), size=tuple(int(v) for v in size),
                                crop=args.get("crop") or "center", channels=channels)
    except ValueError as e:
        raise ConfigError(f"{overrides_from}: {e}") from e
    where = f"{what}'s data settings"
    return FrameSettings(decode, _frames("context", args, decode.fps, where), _frames("horizon", args, decode.fps, where),
                         tuple(notes))


def read_video(path: str | Path, decode) -> tuple[Tensor, float | None, dict[str, Any]]:
    """Every frame of ``path`` decoded with ``decode`` (:class:`~framecast.data.decode.DecodeSettings`):
    ``(frames (N, C, H, W) uint8, fps of the frames, decoder info)``. A missing or unreadable file is an
    :class:`InputError` naming it."""
    from framecast.data.decode import VideoDecodeError, decode_video

    path = Path(path)
    if path.is_dir():
        raise InputError(f"--video {path}: a folder; give one video file")
    try:
        frames, info = decode_video(path, decode)
    except VideoDecodeError as e:
        raise InputError(f"--video {path}: {e.reason}") from e
    fps = decode.fps or info.get("source_fps")
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))), fps, info


def _seconds(frames: int, fps: float | None) -> str:
    return f"{frames / fps:.2f} s" if fps else f"{frames} frames"


def context_end(n: int, context: int, fps: float | None, at: float | None, path: str | Path = "the video") -> int:
    """The index ``e`` of the first frame after the context window that ends at ``at`` seconds (default: the
    end, ``n``), checked: a video shorter than the context, ``at`` outside the video or too early for a whole
    context are :class:`InputError`\\ s naming the lengths."""
    rate = f" at {fps:g} fps" if fps else ""
    if n < context:
        raise InputError(f"--video {path} is too short: {n} frames ({_seconds(n, fps)}{rate}), but the checkpoint's "
                         f"context is {context} frames ({_seconds(context, fps)})")
    if at is None:
        return n
    if not fps:
        raise ConfigError(f"--at needs a frame rate, and --video {path} has none: give --fps")
    duration = n / fps
    if not 0 <= at <= duration + 0.5 / fps:
        raise InputError(f"--at {at:g} s is outside --video {path}: it lasts {duration:.2f} s ({n} frames{rate}); "
                         f"give --at from {context / fps:.2f} to {duration:.2f}")
    end = min(n, round(at * fps))
    if end < context:
        raise InputError(f"--at {at:g} s leaves {end} frames before it ({_seconds(end, fps)}), fewer than the "
                         f"checkpoint's context of {context} frames ({_seconds(context, fps)}): give --at "
                         f"{context / fps:.2f} or later")
    return end


@dataclass
class VideoClip:
    """A decoded video and the context window in it: ``frames (N, C, H, W)`` uint8, ``end`` the first frame
    after the context (the first forecast frame, where the video goes on)."""

    path: Path
    frames: Tensor
    fps: float | None
    end: int
    context_frames: int
    settings: FrameSettings
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> Tensor:
        """The context ``(T_ctx, C, H, W)`` uint8."""
        return self.frames[self.end - self.context_frames : self.end]

    def truth(self, horizon: int) -> Tensor:
        """The frames after the context ``(min(horizon, N - end), C, H, W)`` uint8 (empty past the end)."""
        return self.frames[self.end : self.end + horizon]

    @property
    def start(self) -> float | None:
        """Seconds into the video of the first forecast frame."""
        return self.end / self.fps if self.fps else None


def video_clip(path: str | Path, module, at: float | None = None, fps: float | None = None,
               data_args: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
               checkpoint: str | None = None, settings: FrameSettings | None = None) -> VideoClip:
    """``path`` decoded like ``module``'s training data (:func:`frame_settings`) and the context window that
    ends at ``at`` seconds (default: the end of the video)."""
    settings = settings or frame_settings(module, data_args, fps, overrides, checkpoint)
    frames, rate, info = read_video(path, settings.decode)
    end = context_end(len(frames), settings.context_frames, rate, at, path)
    return VideoClip(Path(path), frames, rate, end, settings.context_frames, settings, info)
