"""Decoding many videos into the cache in several processes (``framecast prepare --workers N``).

Each worker process runs :meth:`VideoCache.get_or_decode` on one video at a time, so it writes exactly the
files one process writes (the same decoder, the same atomic npy-then-sidecar writes; two writers of one
entry cannot corrupt it). The parent hands out the largest files first (so one long video does not finish
alone at the end), shows one progress bar over all videos, and gets back, for each video, its entry or the
reason it is bad. Workers are forked where the platform can (they start with framecast already imported;
spawned ones would import torch again, seconds each) before any progress bar thread exists, and run one
thread of torch/OpenMP each; they use numpy and PyAV only. ``workers=1`` decodes in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from framecast.data.cache import CacheEntry, VideoCache
from framecast.data.decode import DecodeSettings, VideoDecodeError


@dataclass
class Result:
    """One video's outcome: its entry (``decoded``: it was written now, not found) or the reason it is bad."""

    path: Path
    entry: CacheEntry | None = None
    decoded: bool = False
    reason: str | None = None


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _one(root: Path, path: Path, settings: DecodeSettings) -> Result:
    try:
        entry, decoded = VideoCache(root).get_or_decode(path, settings)
    except VideoDecodeError as e:
        return Result(path, reason=e.reason)
    return Result(path, entry, decoded)


def _single_thread() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def decode_all(cache: VideoCache, paths: list[Path], settings: DecodeSettings, workers: int = 1,
               progress: Callable[[Result], None] | None = None, start: float = 0.0) -> Iterator[Result]:
    """Every video of ``paths`` into ``cache`` with ``workers`` processes; yields each :class:`Result` as it
    comes (in completion order) after calling ``progress`` with it. The cache folder is checked first
    (:class:`~framecast.data.cache.CacheDirError` naming it).

    ``start`` (in [0, 1)): begin that far into the order and wrap around. Machines that share the cache
    folder and start at ``rank / machines`` decode different videos first and then find the others' videos
    cached (each video is looked up just before it is decoded), so together they decode each about once."""
    cache.ensure_writable()
    workers = max(1, min(int(workers), len(paths) or 1))
    if workers == 1:
        order = _rotated(list(paths), start)
        with _bar(len(paths)) as bar:
            yield from _reported((_one(cache.root, p, settings) for p in order), bar, progress)
        return
    order = _rotated(sorted(paths, key=_size, reverse=True), start)  # the longest first: the last one is short
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_single_thread) as pool:
        futures = [pool.submit(_one, cache.root, p, settings) for p in order]  # (starts the processes)
        with _bar(len(paths)) as bar:
            yield from _reported((f.result() for f in as_completed(futures)), bar, progress)


def _rotated(items: list, start: float) -> list:
    k = int(start * len(items)) % len(items) if items else 0
    return items[k:] + items[:k]


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="prepare", unit="video", file=sys.stderr)


def _reported(results: Iterator[Result], bar, progress) -> Iterator[Result]:
    for result in results:
        if progress is not None:
            progress(result)
        bar.update(1)
        yield result
