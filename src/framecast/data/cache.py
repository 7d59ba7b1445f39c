"""On-disk cache of decoded videos.

Layout: one pair of files per (video file, decode settings) in a flat folder::

    <cache_dir>/<video stem>-<key>.npy    uint8 (N, H, W, C) frames, as returned by decode_video
    <cache_dir>/<video stem>-<key>.json   sidecar: key, source path/size/mtime, settings, shape,
                                          npy byte size, frame count, source fps, duration, ...

``key`` is a hash of the video's absolute path, size and modification time (ns), the decode
settings (fps, size, crop, channels) and ``CACHE_VERSION``; touching or replacing a video changes
its key, so it is decoded again (the old pair is left in place, never deleted).

Both files are written atomically (temporary file in the same folder, fsync, ``os.replace``), the
npy first and the sidecar last. An entry is valid only if both files exist, the sidecar parses,
carries the expected key and describes the npy (byte size, shape, dtype); anything else (a
truncated npy, an npy without sidecar, a stray temporary file) is ignored and rebuilt. Entries are
read with ``np.load(mmap_mode="r")``.

Default folder: ``$FRAMECAST_CACHE`` if set, else ``~/.cache/framecast/video``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framecast.data.decode import DecodeSettings, decode_video

CACHE_VERSION = 1


class CacheDirError(OSError):
    """The cache folder cannot be created or written; the message names it and says how to pick another."""


def default_cache_dir() -> Path:
    """``$FRAMECAST_CACHE`` if set, else ``~/.cache/framecast/video``."""
    env = os.environ.get("FRAMECAST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "framecast" / "video"


@dataclass
class CacheEntry:
    """A valid cache entry; ``meta`` is the parsed sidecar."""

    frames_path: Path
    meta_path: Path
    meta: dict

    @property
    def num_frames(self) -> int:
        return int(self.meta["frames"])

    def load(self) -> np.ndarray:
        """The frames, uint8 ``(N, H, W, C)``, memory-mapped read-only."""
        return np.load(self.frames_path, mmap_mode="r")


class VideoCache:
    """Decode-once cache of videos under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def source_record(self, video: str | Path, settings: DecodeSettings) -> dict:
        """``{"path", "size", "mtime_ns", "key"}`` for the current state of ``video``."""
        video = Path(video).resolve()
        st = video.stat()
        source = {"path": str(video), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        blob = json.dumps(
            {"version": CACHE_VERSION, "source": source, "settings": settings.to_dict()}, sort_keys=True
        )
        return {**source, "key": hashlib.sha256(blob.encode()).hexdigest()[:24]}

    def entry_paths(self, source: dict) -> tuple[Path, Path]:
        """``(npy path, json path)`` of the entry for a :meth:`source_record`."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source["path"]).stem)[:60]
        base = self.root / f"{stem}-{source['key']}"
        return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")

    def lookup(self, video: str | Path, settings: DecodeSettings) -> CacheEntry | None:
        """The valid entry for ``video`` as it is now, or None."""
        source = self.source_record(video, settings)
        frames_path, meta_path = self.entry_paths(source)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != source["key"] or meta.get("source") != _without_key(source):
                return None
            if frames_path.stat().st_size != meta["npy_bytes"]:
                return None
            frames = np.load(frames_path, mmap_mode="r")
            if list(frames.shape) != meta["shape"] or frames.dtype != np.uint8:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return CacheEntry(frames_path, meta_path, meta)

    def store(self, source: dict, settings: DecodeSettings, frames: np.ndarray, info: dict) -> CacheEntry:
        """Write ``frames`` (uint8 ``(N, H, W, C)``) and then its sidecar atomically.

        ``source`` is the :meth:`source_record` taken before decoding, so a file modified while it
        was being decoded is not filed under its new state.
        """
        frames_path, meta_path = self.entry_paths(source)
        self.ensure_writable()
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        try:
            _atomic_write(frames_path, lambda f: np.save(f, frames, allow_pickle=False))
        except OSError as e:
            raise self._unwritable(e) from e
        meta = {
            **info,
            "key": source["key"],
            "version": CACHE_VERSION,
            "source": _without_key(source),
            "settings": settings.to_dict(),
            "shape": list(frames.shape),
            "dtype": "uint8",
            "npy_bytes": frames_path.stat().st_size,
        }
        try:
            _atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        except OSError as e:
            raise self._unwritable(e) from e
        return CacheEntry(frames_path, meta_path, meta)

    def ensure_writable(self) -> None:
        """Create the cache folder if needed; :class:`CacheDirError` naming it if that is impossible."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(e) from e
        if not self.root.is_dir():
            raise self._unwritable(NotADirectoryError(f"{self.root} is not a folder"))

    def _unwritable(self, error: OSError) -> CacheDirError:
        return CacheDirError(
            f"cannot write the video cache folder {self.root} ({error.strerror or error}): set "
            f"data.init_args.cache_dir (framecast prepare --cache-dir) or $FRAMECAST_CACHE to a writable folder"
        )

    def get_or_decode(self, video: str | Path, settings: DecodeSettings) -> tuple[CacheEntry, bool]:
        """``(entry, decoded)``: the cached entry, decoding and storing it first if needed.

        Raises VideoDecodeError (nothing is written) when the video cannot be decoded completely.
        """
        entry = self.lookup(video, settings)
        if entry is not None:
            return entry, False
        source = self.source_record(video, settings)
        self.ensure_writable()  # before decoding, which can take long
        frames, info = decode_video(video, settings)
        return self.store(source, settings, frames, info), True


def _without_key(source: dict) -> dict:
    return {k: v for k, v in source.items() if k != "key"}


def _atomic_write(path: Path, write) -> None:
    """Write ``path`` via a temporary file in the same folder, fsync and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
