"""Finding video files and decoding them with PyAV into uint8 frame arrays.

Conventions
-----------
* A decoded video is a ``numpy.uint8`` array of shape ``(N, H, W, C)`` (channels last, as PyAV
  returns it), ``C`` = 1 (grayscale) or 3 (RGB). The data module turns clips into float32
  ``(T, C, H, W)`` tensors in ``[0, 1]``.
* Resampling (``fps`` given): frame times are presentation timestamps, ``pts * time_base`` seconds,
  measured from the first frame. For every target time ``k / fps`` (``k = 0, 1, ...`` while the
  target is not after the last frame) the decoded frame nearest in time is picked (ties go to the
  earlier frame). Targets are computed as ``k / fps``, never accumulated, so there is no drift, and
  variable frame rates are handled the same way. ``fps=None`` keeps every decoded frame.
* Timestamps are repaired before use: the decoder returns frames in presentation order, so the
  timestamps seen within a small window are sorted and handed out in that order. This fixes AVI
  files with packed B-frames, whose frames carry swapped pts (1, 2, 4, 3, ...).
* Resizing (``size=(H, W)``): ``crop="center"`` crops the frame to the target aspect ratio around its
  centre and resizes; ``crop="none"`` resizes the whole frame (the aspect ratio may change). Scaling
  and pixel-format conversion are done by FFmpeg (swscale, area interpolation) on the frames that a
  target time selects only.
"""

from __future__ import annotations

import glob
import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from framecast.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".gif")
_REORDER_WINDOW = 8  # frames; larger than any B-frame reordering delay seen in practice
# Resampling repeats a source frame while it stays the nearest one; more repeats than this (on average, plus
# the extra allowance, e.g. a GIF with long frame delays) mean corrupt timestamps, not a real video.
MAX_REPEAT = 50
MAX_EXTRA_FRAMES = 10_000


class VideoDecodeError(Exception):
    """A file that cannot be used as a video; ``reason`` says why (without the file name)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadVideoError(InputError):
    """One error for all the bad video inputs found; ``problems`` is a list of ``(path, reason)``."""

    def __init__(self, problems: list[tuple[str, str]], headline: str | None = None, hint: bool = True):
        self.problems = list(problems)
        lines = [headline or f"{len(self.problems)} bad video input(s):"]
        lines += [f"  - {path}: {reason}" for path, reason in self.problems]
        if hint and self.problems:
            lines.append(
                "Fix or remove these files, or set `on_bad_video: skip` (data module option; "
                "`framecast prepare --on-bad-video skip`) to leave them out with a warning."
            )
        super().__init__("\n".join(lines))


def format_problems(problems: list[tuple[str, str]]) -> str:
    """``path: reason`` lines, one per problem."""
    return "\n".join(f"  - {path}: {reason}" for path, reason in problems)


@dataclass(frozen=True)
class DecodeSettings:
    """What a decoded frame array depends on (besides the source file); part of the cache key.

    fps: output frame rate, or None for every decoded frame. size: output ``(H, W)``, or None for the
    source size. crop: "center" or "none". channels: 1 (grayscale) or 3 (RGB).
    """

    fps: float | None = None
    size: tuple[int, int] | None = (64, 64)
    crop: str = "center"
    channels: int = 1

    def __post_init__(self):
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive or None, got {self.fps}")
        if self.size is not None:
            size = tuple(int(v) for v in self.size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"size must be (H, W) with positive ints, got {self.size}")
            object.__setattr__(self, "size", size)
        if self.fps is not None:
            object.__setattr__(self, "fps", float(self.fps))
        if self.crop not in ("center", "none"):
            raise ValueError(f"crop must be 'center' or 'none', got {self.crop!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        return d


# ---------------------------------------------------------------------------------------------
# Finding inputs


def find_videos(videos: str | Path | Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Resolve ``videos`` (a file, a folder searched recursively, a glob, or a list of those).

    Returns ``(paths, problems)``: the absolute, de-duplicated, sorted video paths and a list of
    ``(input, reason)`` for inputs that name nothing usable (missing path, empty folder, glob with
    no match). A file named explicitly is kept whatever its extension; decoding decides.
    """
    items = [videos] if isinstance(videos, (str, Path)) else list(videos)
    found: set[Path] = set()
    problems: list[tuple[str, str]] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            hits = [p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
            if not hits:
                problems.append((text, f"folder contains no videos ({' '.join(VIDEO_EXTENSIONS)})"))
            found.update(hits)
        elif path.is_file():
            found.add(path)
        elif glob.has_magic(text):
            hits = [Path(p) for p in glob.glob(str(path), recursive=True)]
            hits = [p for p in hits if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
            if not hits:
                problems.append((text, "pattern matches no video file"))
            found.update(hits)
        else:
            problems.append((text, "no such file or folder"))
    return sorted(p.resolve() for p in found), problems


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_video(path: str | Path, settings: DecodeSettings) -> tuple[np.ndarray, dict]:
    """Decode ``path`` into ``(frames, info)``.

    frames: uint8 ``(N, H, W, C)``, resampled to ``settings.fps`` and resized to ``settings.size``.
    info: ``frames`` (N), ``source_frames`` (decoded frames), ``source_fps``, ``duration`` (seconds,
    first to last frame plus one frame), ``width``/``height`` (source size), ``codec``.

    Raises VideoDecodeError for an empty, unreadable, truncated or corrupt file. A file whose
    decoder fails midway, or that yields clearly fewer frames than its header announces, is
    reported as truncated/corrupt, never returned as a partial array.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError("no such file")
    if path.stat().st_size == 0:
        raise VideoDecodeError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoDecodeError(f"not a readable video ({e.strerror or e})") from e
    with container:
        if not container.streams.video:
            raise VideoDecodeError("contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        counter = {"decoded": 0, "last_time": None, "first_time": None}
        frames = _decode_frames(container, stream, counter)
        converter = _Converter(settings)
        timed = _repaired_times(frames, stream, counter)
        try:
            if settings.fps is None:
                out = [converter(frame) for _, frame in timed]
            else:
                out = []
                for frame in _nearest_frames(timed, settings.fps):
                    out.append(converter(frame))
                    if len(out) > MAX_REPEAT * counter["decoded"] + MAX_EXTRA_FRAMES:
                        raise VideoDecodeError(
                            f"implausible timestamps (corrupt file or time base): resampling {counter['decoded']} "
                            f"decoded frames to {settings.fps:g} fps gives more than {len(out) - 1} frames (a frame "
                            f"at {counter['last_time']:.6g} s)"
                        )
        except av.FFmpegError as e:
            raise VideoDecodeError(
                f"truncated or corrupt: decoder error after {counter['decoded']} of "
                f"{stream.frames or '?'} frames ({e.strerror or e})"
            ) from e
        _check_complete(path, container, stream, counter)
        source_fps = stream.average_rate or stream.guessed_rate
        info = {
            "frames": len(out),
            "source_frames": counter["decoded"],
            "source_fps": float(source_fps) if source_fps else None,
            "duration": _duration(counter, source_fps),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "codec": stream.codec_context.name,
        }
    return np.stack(out), info


def _decode_frames(container, stream, counter: dict) -> Iterator[av.VideoFrame]:
    for frame in container.decode(stream):
        counter["decoded"] += 1
        yield frame


def _frame_time(frame: av.VideoFrame, time_base) -> float | None:
    """Seconds of ``frame``'s pts (its dts if it has no pts), or None."""
    time_base = frame.time_base or time_base
    stamp = frame.pts if frame.pts is not None else frame.dts
    return float(stamp * time_base) if stamp is not None and time_base else None


def _repaired_times(frames: Iterable[av.VideoFrame], stream, counter: dict) -> Iterator[tuple[float, object]]:
    """Yield ``(seconds since first frame, frame)`` in decoder (= presentation) order.

    The timestamps of up to ``_REORDER_WINDOW`` pending frames are kept in a heap and the smallest
    is given to the oldest pending frame, so swapped timestamps come out sorted. Frames without
    any timestamp get the previous time plus one nominal frame period.
    """
    rate = stream.average_rate or stream.guessed_rate or 25
    period = 1.0 / float(rate)
    pending: deque = deque()
    times: list[float] = []
    last = None

    def pop():
        t = heapq.heappop(times)
        if counter["first_time"] is None:
            counter["first_time"] = t
        counter["last_time"] = t
        return t - counter["first_time"], pending.popleft()

    for frame in frames:
        t = _frame_time(frame, stream.time_base)
        if t is None:
            t = 0.0 if last is None else last + period
        last = t if last is None else max(last, t)
        heapq.heappush(times, t)
        pending.append(frame)
        if len(pending) > _REORDER_WINDOW:
            yield pop()
    while pending:
        yield pop()


def _nearest_frames(timed: Iterable[tuple[float, object]], fps: float) -> Iterator[object]:
    """For k = 0, 1, ...: yield the frame nearest to ``k / fps`` (ties: the earlier frame).

    ``timed`` yields ``(seconds, frame)`` with non-decreasing seconds starting at 0. Stops at the
    last target not after the last frame. Only frames that some target selects are yielded (a frame
    is yielded several times when the output rate is above the source rate).
    """
    k = 0
    prev_t, prev = None, None
    for t, frame in timed:
        while k / fps <= t + 1e-9:
            target = k / fps
            if prev is not None and target - prev_t <= t - target + 1e-9:
                yield prev
            else:
                yield frame
            k += 1
        prev_t, prev = t, frame


class _Converter:
    """Frame -> uint8 ``(H, W, C)`` array, resized/cropped by swscale; reuses the last result."""

    def __init__(self, settings: DecodeSettings):
        self.settings = settings
        # planar RGB scales faster than rgb24 in swscale; to_ndarray returns it as (H, W, 3) RGB
        self.format = "gray" if settings.channels == 1 else "gbrp"
        self.reformatter = VideoReformatter()
        self._last: tuple[object, np.ndarray] | None = None

    def __call__(self, frame) -> np.ndarray:
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        out_h, out_w = self.settings.size or (frame.height, frame.width)
        width, height = scaled_size(frame.width, frame.height, out_w, out_h, self.settings.crop)
        image = self.reformatter.reformat(
            frame, width, height, self.format, interpolation="AREA", threads=1
        ).to_ndarray()
        if image.ndim == 2:
            image = image[:, :, None]
        y0, x0 = (height - out_h) // 2, (width - out_w) // 2
        image = np.ascontiguousarray(image[y0 : y0 + out_h, x0 : x0 + out_w])
        self._last = (frame, image)
        return image


def scaled_size(src_w: int, src_h: int, out_w: int, out_h: int, crop: str) -> tuple[int, int]:
    """Size ``(width, height)`` to scale a frame to before the centre crop to ``(out_w, out_h)``.

    With ``crop="center"`` the frame is scaled uniformly so that it covers the output, which equals
    cropping to the output aspect ratio first and resizing; with ``"none"`` it is the output size.
    """
    if crop == "none":
        return out_w, out_h
    scale = max(out_w / src_w, out_h / src_h)
    return max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))


def _check_complete(path: Path, container, stream, counter: dict) -> None:
    """Raise VideoDecodeError if the decoder stopped early without an error (truncated file)."""
    n = counter["decoded"]
    if n == 0:
        raise VideoDecodeError("no decodable video frames")
    expected = stream.frames
    if expected and n < expected - max(2, expected // 100):
        raise VideoDecodeError(f"truncated or corrupt: decoded {n} of the {expected} frames in its header")
    header_duration = _header_duration(container, stream)
    covered = _duration(counter, stream.average_rate or stream.guessed_rate)
    if not expected and header_duration and covered < header_duration - max(1.0, 0.05 * header_duration):
        raise VideoDecodeError(
            f"truncated or corrupt: its frames cover {covered:.2f} s of the {header_duration:.2f} s in its header"
        )
    if container.format.name == "gif" and not _gif_has_trailer(path):
        raise VideoDecodeError("truncated GIF (missing trailer byte)")


def _header_duration(container, stream) -> float | None:
    """Duration announced by the header in seconds (the stream's, else the container's)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


def _gif_has_trailer(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b";"


def _duration(counter: dict, source_fps) -> float | None:
    if counter["last_time"] is None:
        return counter["decoded"] / float(source_fps) if source_fps else None
    period = 1.0 / float(source_fps) if source_fps else 0.0
    return counter["last_time"] - counter["first_time"] + period
