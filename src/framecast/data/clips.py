"""Clip windows and train/val/test splits: pure arithmetic on frame counts, no I/O.

A *window* is ``(video_index, start)``: the clip is frames ``start .. start + clip_len - 1`` of that
video (``clip_len = context_frames + horizon_frames``). Windows never cross a video's end, and
never cross the end of the split part they belong to.

Split rules (``fractions = (train, val, test)``):

* 3 or more videos: whole videos are assigned to splits. Videos are taken in sorted-path order,
  shuffled with ``random.Random(seed)``, and cut by the fractions (rounded); every split with a
  positive fraction gets at least one video and train keeps at least one. No frame of a val/test
  video is ever seen in training.
* explicit splits (``splits: {train: [globs], val: [...], test: [...]}``): each video goes to the split whose
  patterns match it (a protocol such as KTH's persons 1-16 / 17-25); the fractions are not used.
* 1 or 2 videos: each video is split by time: its first part is train, then val, then test, by the
  fractions, with a gap of one clip length between consecutive parts, so no clip of one split
  shares a frame with (or directly continues into) a clip of another.

Strides: training windows start every ``train_stride`` frames; val/test windows every
``max(train_stride, clip_len)`` frames, so evaluation clips never overlap.
"""

from __future__ import annotations

import random
from pathlib import Path

SPLITS = ("train", "val", "test")


def seconds_to_frames(seconds: float, fps: float) -> int:
    """``round(seconds * fps)``, at least 1."""
    return max(1, round(seconds * fps))


def normalize_fractions(fractions) -> tuple[float, float, float]:
    """Check ``(train, val, test)`` fractions (non-negative, train > 0) and scale them to sum to 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0:
        raise ValueError(f"split must be 3 non-negative fractions (train, val, test) with train > 0, got {fractions}")
    total = sum(fr)
    return tuple(f / total for f in fr)


def clip_starts(start: int, stop: int, clip_len: int, stride: int) -> list[int]:
    """Start frames ``s = start, start + stride, ...`` with ``s + clip_len <= stop``."""
    return list(range(start, stop - clip_len + 1, stride))


def assign_videos(n_videos: int, fractions, seed: int = 0) -> list[list[int]]:
    """Indices (into the sorted video list) of the videos in each split, ``[train, val, test]``.

    Meant for ``n_videos >= 3``; every split with a positive fraction gets >= 1 video.
    """
    fr = normalize_fractions(fractions)
    order = list(range(n_videos))
    random.Random(seed).shuffle(order)
    counts = [0, round(n_videos * fr[1]), round(n_videos * fr[2])]
    for i in (1, 2):
        if fr[i] > 0 and counts[i] == 0:
            counts[i] = 1
    while n_videos - counts[1] - counts[2] < 1:
        i = 1 if counts[1] >= counts[2] else 2
        counts[i] -= 1
    counts[0] = n_videos - counts[1] - counts[2]
    first_val, first_test = counts[0], counts[0] + counts[1]
    return [sorted(order[:first_val]), sorted(order[first_val:first_test]), sorted(order[first_test:])]


def time_split(n_frames: int, fractions, gap: int) -> list[tuple[int, int]]:
    """Frame ranges ``[(start, stop)]`` for train, val and test of one video split by time.

    The parts follow each other in that order, sized by the fractions, with ``gap`` frames left out
    between consecutive non-empty parts. A part with fraction 0 is the empty range ``(x, x)``.
    """
    fr = normalize_fractions(fractions)
    n_parts = sum(f > 0 for f in fr)
    usable = max(0, n_frames - gap * (n_parts - 1))
    ranges, cum, pos = [], 0.0, 0
    for i, f in enumerate(fr):
        if f == 0:
            ranges.append((pos, pos))
            continue
        cum += f
        stop = pos + round(usable * cum) - round(usable * (cum - f))
        ranges.append((pos, min(stop, n_frames)))
        pos = min(stop + gap, n_frames)
    return ranges


def assign_by_patterns(paths: list, patterns: dict[str, list[str]]) -> list[list[int]]:
    """Indices of the videos in each split ``[train, val, test]`` from explicit glob patterns per split.

    A pattern matches a video when it matches its file name or its full path (``fnmatch``: ``*``, ``?``,
    ``[0-9]``). A video matched by patterns of two splits is an error naming both; a video matched by none
    is left out (see :func:`unassigned`)."""
    from fnmatch import fnmatch

    unknown = sorted(set(patterns) - set(SPLITS))
    if unknown:
        raise ValueError(f"data.init_args.splits has unknown split(s) {unknown}; the splits are {list(SPLITS)}")
    out: list[list[int]] = [[] for _ in SPLITS]
    for i, path in enumerate(paths):
        hits = [s for s in SPLITS if any(fnmatch(Path(path).name, p) or fnmatch(str(path), p)
                                         for p in patterns.get(s) or [])]
        if len(hits) > 1:
            raise ValueError(f"data.init_args.splits: {path} matches the patterns of {' and '.join(hits)}; every "
                             f"video must belong to one split")
        if hits:
            out[SPLITS.index(hits[0])].append(i)
    return out


def plan_windows(
    lengths: list[int],
    fractions,
    clip_len: int,
    train_stride: int = 1,
    seed: int = 0,
    max_clips: int | None = None,
    assignment: list[list[int]] | None = None,
) -> dict[str, list[tuple[int, int]]]:
    """Windows ``(video_index, start)`` for each split, ``{"train": [...], "val": [...], "test": [...]}``.

    ``lengths`` are the videos' frame counts in sorted-path order. See the module docstring for
    the split and stride rules. ``assignment`` (videos per split, e.g. from :func:`assign_by_patterns`)
    replaces the seeded shuffle and the split by time. ``max_clips`` keeps at most that many windows per
    split, evenly spaced over the list (deterministic).
    """
    if clip_len < 1 or train_stride < 1:
        raise ValueError(f"clip length and stride must be >= 1, got {clip_len} and {train_stride}")
    strides = {"train": train_stride, "val": max(train_stride, clip_len), "test": max(train_stride, clip_len)}
    ranges: dict[str, list[tuple[int, int, int]]] = {s: [] for s in SPLITS}  # (video, start, stop)
    if assignment is not None:
        for split, videos in zip(SPLITS, assignment):
            ranges[split] = [(v, 0, lengths[v]) for v in videos]
    elif len(lengths) >= 3:
        for split, videos in zip(SPLITS, assign_videos(len(lengths), fractions, seed)):
            ranges[split] = [(v, 0, lengths[v]) for v in videos]
    else:
        for v, n in enumerate(lengths):
            for split, (start, stop) in zip(SPLITS, time_split(n, fractions, gap=clip_len)):
                ranges[split].append((v, start, stop))
    windows = {}
    for split in SPLITS:
        found = [(v, s) for v, a, b in ranges[split] for s in clip_starts(a, b, clip_len, strides[split])]
        windows[split] = subsample(found, max_clips)
    return windows


def subsample(items: list, max_items: int | None) -> list:
    """At most ``max_items`` of ``items``, evenly spaced, first one included (all if None)."""
    if max_items is None or len(items) <= max_items:
        return list(items)
    if max_items <= 0:
        return []
    step = len(items) / max_items
    return [items[int(i * step)] for i in range(max_items)]
