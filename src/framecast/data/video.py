"""Clips of real videos for next-frame prediction: ``VideoClipDataModule`` and its Dataset.

Each dataset item is ``{"context": (T_ctx, C, H, W), "target": (T_pred, C, H, W)}``, float32 in
``[0, 1]``; dataloaders stack them to ``(B, T, C, H, W)``. ``C`` is 1 (grayscale) or 3 (RGB).

Pipeline: ``prepare_data()``/``setup()`` find the videos, decode each once with PyAV (resampled to
``fps`` by timestamps, resized to ``size``; see :mod:`framecast.data.decode`) into the on-disk
cache (:mod:`framecast.data.cache`), check them, and cut clip windows per split
(:mod:`framecast.data.clips`). Training then reads clips from the memory-mapped cache files.
All decoding and validation happens there, before any training step.

Defaults chosen here (see :mod:`framecast.data.clips` for details):

* stride: training clips start every frame (``stride_*`` overrides); val/test clips start every
  ``max(stride, clip length)`` frames, so they never overlap.
* split: with >= 3 videos whole videos go to train/val/test (seeded shuffle of the sorted paths);
  with 1 or 2 videos each video is split by time (train, then val, then test) with a gap of one
  clip length between the parts. Splits are computed over the usable videos (after
  ``on_bad_video: skip`` drops bad ones).
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from framecast.data.cache import CacheEntry, VideoCache
from framecast.data.clips import (
    SPLITS,
    assign_by_patterns,
    normalize_fractions,
    plan_windows,
    seconds_to_frames,
)
from framecast.data.decode import BadVideoError, DecodeSettings, VideoDecodeError, find_videos
from framecast.data.samplers import (
    EpochShuffleSampler,
    EvalSampler,
    ResumableDataLoader,
    TrainerProgress,
)
from framecast.data.video_dataset import VideoClipDataset, augment_transform, check_augment
from framecast.errors import InputError

log = logging.getLogger(__name__)

class VideoClipDataModule(L.LightningDataModule):
    """Train/val/test clips of real videos (mp4, avi, mkv, mov, webm, m4v, gif) decoded with PyAV.

    Batches: ``{"context": (B, context_frames, C, H, W), "target": (B, horizon_frames, C, H, W)}``,
    float32 in ``[0, 1]``.

    Args:
        videos: a file, a folder (searched recursively for video extensions), a glob, or a list.
        fps: frame rate the model sees; frames are picked by nearest presentation timestamp.
            None keeps the native frames (then clip lengths must be given in frames).
        context_seconds / context_frames: context length; give exactly one (seconds need fps).
        horizon_seconds / horizon_frames: predicted length; give exactly one.
        stride_seconds / stride_frames: step between training clip starts (default 1 frame;
            at most one of them). Val/test clips use ``max(stride, clip length)``.
        size: ``(H, W)`` of the frames. crop: "center" (crop to the aspect ratio, then resize) or
            "none" (plain resize). channels: 1 (grayscale) or 3 (RGB).
        augment: training-only augmentation, e.g. ``{"hflip": true, "random_resized_crop":
            [0.8, 1.0], "time_reverse": true}``; the same transform for every frame of a clip.
        split: (train, val, test) fractions; see the module docstring for how they apply.
        splits: explicit splits instead, ``{"train": [globs], "val": [...], "test": [...]}``: a video goes to
            the split one of whose patterns matches its file name or path (e.g. KTH's persons 1-16 train,
            17-25 test: ``person0[1-9]_*``, ``person1[0-6]_*``, ...); videos matched by none are left out.
            See :meth:`describe_splits` / :meth:`write_splits` for what each split holds.
        batch_size, num_workers: DataLoader settings.
        cache_dir: decode cache folder (default ``$FRAMECAST_CACHE`` or ``~/.cache/framecast/video``).
        on_bad_video: "error" (one BadVideoError listing every bad input) or "skip" (warn, go on).
            Having no usable video or no clip in a needed split is always an error.
        seed: seed of the video-to-split assignment.
        max_clips_per_split: keep at most this many clips per split (evenly spaced).
        streaming: a folder or object-store URL written by ``framecast prepare --config FILE --to litdata OUT``
            with these settings: the clips are streamed from its LitData chunks, nothing is decoded or cached
            (:mod:`framecast.data.streaming`).

    Attributes: ``channels``, ``context_frames``, ``horizon_frames``, ``size`` (H, W), ``fps``,
    ``stats`` (``{"decoded": n, "cached": n}`` video loads this instance made), and after setup
    ``videos_by_split`` (paths per split) and ``windows`` (``(video index, start)`` per split,
    indices into ``video_paths``).
    """

    def __init__(
        self,
        videos: str | list[str],
        fps: float | None = None,
        context_seconds: float | None = None,
        horizon_seconds: float | None = None,
        context_frames: int | None = None,
        horizon_frames: int | None = None,
        stride_seconds: float | None = None,
        stride_frames: int | None = None,
        size: tuple[int, int] = (64, 64),
        crop: Literal["center", "none"] = "center",
        channels: int = 1,
        augment: dict[str, Any] | None = None,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        splits: dict[str, list[str]] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        cache_dir: str | None = None,
        on_bad_video: Literal["error", "skip"] = "error",
        seed: int = 0,
        max_clips_per_split: int | None = None,
        streaming: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.videos = videos
        _check_settings(fps, size, crop, channels, batch_size)
        self.settings = DecodeSettings(fps=fps, size=tuple(size), crop=crop, channels=channels)
        self.fps = self.settings.fps
        self.size = self.settings.size
        self.channels = channels
        self.context_frames = _length("context", context_seconds, context_frames, fps)
        self.horizon_frames = _length("horizon", horizon_seconds, horizon_frames, fps)
        self.stride_frames = 1
        if stride_seconds is not None or stride_frames is not None:
            self.stride_frames = _length("stride", stride_seconds, stride_frames, fps)
        self.augment = check_augment(augment)
        self.split = normalize_fractions(split)
        if splits is not None:
            if not isinstance(splits, dict) or not splits:
                raise ValueError(f"data.init_args.splits must map train/val/test to lists of glob patterns, got {splits!r}")
            bad = sorted(set(splits) - set(SPLITS))
            if bad:
                raise ValueError(f"data.init_args.splits has unknown split(s) {bad}; the splits are {list(SPLITS)}")
            splits = {k: [v] if isinstance(v, str) else list(v or []) for k, v in splits.items()}
            # a split without patterns is switched off, like a split fraction of 0
            self.split = tuple(1.0 if splits.get(s) else 0.0 for s in SPLITS)
        self.splits = splits
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache = VideoCache(cache_dir)
        if on_bad_video not in ("error", "skip"):
            raise ValueError(f"on_bad_video must be 'error' or 'skip', got {on_bad_video!r}")
        self.on_bad_video = on_bad_video
        self.seed = seed
        self.max_clips_per_split = max_clips_per_split
        self.streaming = streaming
        self._manifest: dict | None = None
        self.stats = {"decoded": 0, "cached": 0}
        self.video_paths: list[Path] = []
        self.videos_by_split: dict[str, list[Path]] = {}
        self.windows: dict[str, list[tuple[int, int]]] = {}
        self._entries: list[CacheEntry] | None = None
        self._datasets: dict[str, VideoClipDataset] = {}

    @property
    def clip_frames(self) -> int:
        """Frames per clip: context + horizon."""
        return self.context_frames + self.horizon_frames

    # -- loading -------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Decode every video into the cache (or find it there); raise on bad input."""
        if self.streaming is None:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load all videos (from the cache; decoding what is missing), check them, cut the splits; with
        ``streaming``, read the splits from its manifest instead (checked against these settings)."""
        if self.streaming is not None and self._manifest is None:
            from framecast.data import streaming

            self._manifest = streaming.load(self)
        self._load()
        if not self.windows:
            lengths = [e.num_frames for e in self._entries]
            assignment = None if self.splits is None else assign_by_patterns(self.video_paths, self.splits)
            self.windows = plan_windows(
                lengths, self.split, self.clip_frames, self.stride_frames, self.seed, self.max_clips_per_split,
                assignment=assignment,
            )
            self.videos_by_split = {
                s: sorted({self.video_paths[v] for v, _ in self.windows[s]}) for s in SPLITS
            }
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), None: SPLITS}
        for split in needed.get(stage, ()):
            self._check_split(split)

    def _load(self) -> None:
        """Fill ``video_paths``/``_entries`` once: decode or read the cache, collect every problem."""
        if self._entries is not None or self.streaming is not None:
            return
        paths, problems = find_videos(self.videos)
        good: list[tuple[Path, CacheEntry]] = []
        for path in tqdm(paths, desc="videos", unit="video", disable=None, leave=False):
            try:
                entry, decoded = self.cache.get_or_decode(path, self.settings)
            except VideoDecodeError as e:
                problems.append((str(path), e.reason))
                continue
            self.stats["decoded" if decoded else "cached"] += 1
            if decoded:
                log.info("decoded %s -> %s", path, entry.frames_path)
            if entry.num_frames < self.clip_frames:
                problems.append((str(path), self._too_short(entry)))
                continue
            good.append((path, entry))
        self._report(problems, usable=len(good))
        self.video_paths = [p for p, _ in good]
        self._entries = [e for _, e in good]

    def _too_short(self, entry: CacheEntry) -> str:
        rate = f"{self.fps:g} fps" if self.fps else "native fps"
        return (
            f"too short: {entry.num_frames} frames at {rate}, but one clip needs {self.clip_frames} "
            f"({self.context_frames} context + {self.horizon_frames} horizon)"
        )

    def _report(self, problems: list[tuple[str, str]], usable: int) -> None:
        if problems and self.on_bad_video == "error":
            raise BadVideoError(problems)
        if problems:
            msg = f"skipping {len(problems)} bad video input(s) (on_bad_video=skip):\n" + "\n".join(
                f"  - {p}: {r}" for p, r in problems
            )
            warnings.warn(msg, stacklevel=3)
        if usable == 0:
            raise BadVideoError(problems, headline=f"no usable video in {self.videos!r}", hint=False)

    def split_method(self) -> str:
        n = len(self.video_paths)
        if self.splits is not None:
            return "explicit patterns (data.init_args.splits)"
        return f"by video, seeded shuffle (seed {self.seed})" if n >= 3 else \
            f"by time ({n} video(s): train, gap, val, gap, test)"

    def describe_splits(self) -> dict[str, Any]:
        """What every split holds, to inspect and reproduce it: ``{"method", "settings", "splits": {split:
        [{"video", "clips"}]}, "unassigned": [videos in no split]}`` (after ``setup``)."""
        counts: dict[str, dict[int, int]] = {s: {} for s in SPLITS}
        for s in SPLITS:
            for v, _ in self.windows.get(s, []):
                counts[s][v] = counts[s].get(v, 0) + 1
        used = {v for s in SPLITS for v in counts[s]}
        assigned = set(used)
        if self.splits is not None:
            assigned = {v for part in assign_by_patterns(self.video_paths, self.splits) for v in part}
        return {
            "method": self.split_method(),
            "patterns": self.splits,
            "fractions": None if self.splits is not None else list(self.split),
            "settings": {"fps": self.fps, "size": list(self.size), "channels": self.channels,
                         "context_frames": self.context_frames, "horizon_frames": self.horizon_frames,
                         "train_stride_frames": self.stride_frames},
            "splits": {s: [{"video": str(self.video_paths[v]), "clips": n} for v, n in sorted(counts[s].items())]
                       for s in SPLITS},
            "unassigned": [str(p) for i, p in enumerate(self.video_paths) if i not in assigned],
        }

    def splits_line(self) -> str:
        """One line: videos and clips per split."""
        d = self.describe_splits()
        parts = [f"{s} {len(d['splits'][s])} video(s) / {sum(x['clips'] for x in d['splits'][s])} clips"
                 for s in SPLITS]
        extra = f", {len(d['unassigned'])} video(s) in no split" if d["unassigned"] else ""
        return f"splits ({d['method']}): " + ", ".join(parts) + extra

    def write_splits(self, folder: str | Path) -> Path:
        """Write :meth:`describe_splits` to ``folder/splits.json``; returns the path."""
        import json

        path = Path(folder) / "splits.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.describe_splits(), indent=2) + "\n")
        return path

    def _check_split(self, split: str) -> None:
        if self.windows[split] or self.split[SPLITS.index(split)] == 0:
            return
        n = len(self.video_paths)
        how = self.split_method()
        if self.splits is not None:
            raise InputError(
                f"the {split} split has no clip of {self.clip_frames} frames: no usable video long enough matches "
                f"data.init_args.splits.{split} {self.splits.get(split)} ({n} usable video(s)). Check the patterns "
                f"against the file names, or use shorter clips."
            )
        raise InputError(
            f"the {split} split has no clip of {self.clip_frames} frames: {n} usable video(s), split "
            f"{how} with fractions {self.split}. Use longer or more videos, shorter clips, or set "
            f"its split fraction to 0."
        )

    # -- datasets and loaders ------------------------------------------------------------------

    def dataset(self, split: str) -> VideoClipDataset:
        """The dataset of ``split`` ("train", "val" or "test"); call ``setup`` first."""
        if split not in self._datasets:
            if not self.windows:
                raise RuntimeError("call setup() before asking for datasets or dataloaders")
            train = split == "train"
            options = {"transform": augment_transform(self.augment, self.size) if train else None,
                       "time_reverse": train and bool(self.augment.get("time_reverse")), "seed": self.seed}
            if self.streaming is not None:
                from framecast.data import streaming

                self._datasets[split] = streaming.dataset(self, self._manifest, split, **options)
            else:
                self._datasets[split] = VideoClipDataset([e.frames_path for e in self._entries], self.windows[split],
                                                         self.context_frames, self.horizon_frames, **options)
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader | list:
        """A fixed split, each clip on one process (:class:`EvalSampler`)."""
        if not self.windows.get(split) and self.split[SPLITS.index(split)] == 0:
            return []  # the split is switched off: Lightning runs no loop on an empty list
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EvalSampler(len(dataset), split=split),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Training clips in a seeded random order per epoch (from ``seed`` and the epoch, not from the
        global random state), resumable mid-epoch (:mod:`framecast.data.samplers`)."""
        if not self.windows.get("train"):
            return self._loader("train")  # no training clips: empty (or switched off)
        dataset = self.dataset("train")
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=dataset.sampler(self.seed) if self.streaming is not None else
            EpochShuffleSampler(len(dataset), seed=self.seed, tag_epoch=True),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            progress=TrainerProgress(self),
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        """The test split's clips (what ``framecast predict`` predicts)."""
        self._check_split("test")  # too little video for a test clip: bad input, named
        return self._loader("test")


def _length(name: str, seconds: float | None, frames: int | None, fps: float | None) -> int:
    """Frames from exactly one of ``<name>_seconds`` / ``<name>_frames``."""
    field = f"data.init_args.{name}"
    if (seconds is None) == (frames is None):
        raise ValueError(f"give exactly one of {name}_seconds and {name}_frames ({field}_seconds or {field}_frames)")
    if seconds is not None:
        if fps is None:
            raise ValueError(f"{field}_seconds needs fps (data.init_args.fps; with fps None, give {field}_frames)")
        if not (isinstance(seconds, numbers.Real) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"{field}_seconds must be a positive number of seconds, got {seconds!r}")
        return seconds_to_frames(seconds, fps)
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
        raise ValueError(f"{field}_frames must be an integer >= 1, got {frames!r}")
    return int(frames)


def _check_settings(fps, size, crop, channels, batch_size) -> None:
    """Single-field checks with messages that name the CLI field and the accepted values."""
    if fps is not None and not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"data.init_args.fps must be a positive number of frames per second (or null for the "
                         f"native frames), got {fps!r}")
    if size is None or len(size) != 2 or not all(isinstance(v, numbers.Integral) and v >= 1 for v in size):
        raise ValueError(f"data.init_args.size must be [H, W] with positive integers, got {size!r}")
    if crop not in ("center", "none"):
        raise ValueError(f"data.init_args.crop must be 'center' or 'none', got {crop!r}")
    if channels not in (1, 3):
        raise ValueError(f"data.init_args.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"data.init_args.batch_size must be an integer >= 1, got {batch_size!r}")
