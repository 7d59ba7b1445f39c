"""The stream a prequential code transmits, its blocks, and the data module each block's fit trains on.

The stream is the *training split* of a config's data, as an ordered list of clips:

* moving digits (:class:`~framecast.data.MovingMNISTDataModule`): the training sequences drawn from the
  data's ``seed``, in their order ``0, 1, 2, ...`` (sequence ``i`` is ``default_rng([0, seed, i])``; with
  ``path:`` the training part of the file, in file order);
* video (:class:`~framecast.data.video.VideoClipDataModule`): the training split's windows in time order per
  video, the videos in their sorted-path order, keeping only windows that do not overlap (each starts at or
  after the end of the one kept before it): every frame of the kept windows is transmitted once.

:func:`block_ends` cuts it into blocks (``--blocks`` sizes, or ``--first N --growth G``);
:class:`StreamDataModule` is the data of one block's ``framecast fit``: the clips already transmitted,
the last of them held out for validation (early stopping), nothing else. Every clip read through a
:class:`StreamClips` is reported to :data:`ACCESS_LOG` when a test sets it (the "no peeking" check).
"""

from __future__ import annotations

import contextvars
import copy
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from framecast.errors import ConfigError

ACCESS_LOG: list[tuple[str, int]] | None = None
"""Instrumentation: where a list, every clip read gets ``(purpose, stream index)`` appended (``train``,
``val``, ``scales``, ``code``). ``None`` (the default) records nothing."""


def record(purpose: str, index: int) -> None:
    if ACCESS_LOG is not None:
        ACCESS_LOG.append((purpose, int(index)))


def block_ends(blocks: Sequence[int] | None = None, first: int | None = None, growth: float | None = None,
               num_blocks: int | None = None) -> list[int]:
    """The end (exclusive, in clips) of every block: block ``k`` is clips ``ends[k-1] .. ends[k] - 1``.

    ``blocks``: the block sizes. Else ``first`` clips in block 0 and the clips transmitted multiplied by
    ``growth`` at every block (``ends[k] = round(first * growth**k)``, Blier & Ollivier's doubling for
    ``growth`` 2: sizes ``N, N, 2N, 4N, ...``), ``num_blocks`` blocks."""
    if blocks is not None:
        if first is not None or growth is not None:
            raise ConfigError("give --blocks B1,B2,... or --first N --growth G, not both")
        sizes = list(blocks)
        if len(sizes) < 2:
            raise ConfigError(f"--blocks needs at least two blocks (the first is coded uniformly), got {sizes}")
        if any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ConfigError(f"--blocks sizes must be positive integers, got {sizes}")
        ends, total = [], 0
        for s in sizes:
            total += s
            ends.append(total)
    else:
        first = 8 if first is None else first
        growth = 2.0 if growth is None else growth
        num_blocks = 5 if num_blocks is None else num_blocks
        if first < 1:
            raise ConfigError(f"--first must be >= 1 clip, got {first}")
        if not growth > 1:
            raise ConfigError(f"--growth must be > 1 (the clips transmitted grow by that factor per block), got {growth}")
        if num_blocks < 2:
            raise ConfigError(f"--num-blocks must be >= 2 (the first block is coded uniformly), got {num_blocks}")
        ends = [round(first * growth**k) for k in range(num_blocks)]
        if any(b <= a for a, b in itertools.pairwise(ends)):
            raise ConfigError(f"--first {first} --growth {growth:g} gives empty blocks (ends {ends}): use a larger "
                              f"--first or --growth")
    if ends[0] < 2:
        raise ConfigError(f"the first block needs at least 2 clips (block 1's model holds one out for early "
                          f"stopping), got {ends[0]}")
    return ends


@dataclass
class Stream:
    """The clips of a stream: ``clip(i)`` is stream clip ``i``, ``(T, C, H, W)`` float32 in [0, 1].

    ``train_source`` serves training items (with the data's augmentation, if any), ``plain_source`` the
    same clips without it; ``refs[i]`` is the source index of stream clip ``i`` (``None``: ``i`` itself).
    ``length``: clips in the stream (``None``: unbounded, generated)."""

    kind: str
    description: str
    train_source: Dataset
    plain_source: Dataset
    channels: int
    context_frames: int
    horizon_frames: int
    size: tuple[int, int]
    refs: list[int] | None = None
    length: int | None = None
    tag_epoch: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_clip(self) -> int:
        return self.context_frames + self.horizon_frames

    def source_index(self, i: int) -> int:
        if self.length is not None and not 0 <= i < self.length:
            raise IndexError(f"stream clip {i} is not in the stream of {self.length} clips")
        return i if self.refs is None else self.refs[i]

    def item(self, i: int, purpose: str, augmented: bool = False, epoch: int = 0) -> dict[str, torch.Tensor]:
        record(purpose, i)
        src = self.source_index(i)
        if augmented:
            if self.tag_epoch:
                src += epoch * len(self.train_source)
            item = self.train_source[src]
        else:
            item = self.plain_source[src]
        return {k: self._channels(v) for k, v in item.items()}

    def clip(self, i: int, purpose: str = "code") -> torch.Tensor:
        item = self.item(i, purpose)
        return torch.cat([item["context"], item["target"]], 0)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels == 3:  # moving digits repeats its grey level into RGB
            return x.expand(-1, 3, -1, -1).contiguous()
        return x


def non_overlapping(windows: Sequence[tuple[int, int]], clip_frames: int) -> list[int]:
    """Indices of ``windows`` ``(video, start)`` in time order per video, videos in order, each kept window
    starting at or after the end of the one kept before it in its video."""
    order = sorted(range(len(windows)), key=lambda i: tuple(windows[i]))
    kept: list[int] = []
    last: dict[int, int] = {}
    for i in order:
        video, start = windows[i]
        if start >= last.get(video, -math.inf):
            kept.append(i)
            last[video] = start + clip_frames
    return kept


def build_stream(dm) -> Stream:
    """The stream of a data module (moving digits or video; see the module docstring)."""
    common = {"channels": int(dm.channels), "context_frames": int(dm.context_frames),
              "horizon_frames": int(dm.horizon_frames), "size": tuple(int(v) for v in dm.size)}
    if hasattr(dm, "windows") and callable(getattr(dm, "dataset", None)):  # video clips
        dm.prepare_data()
        dm.setup("fit")
        train = dm.dataset("train")
        plain = copy.copy(train)
        plain.transform, plain.time_reverse = None, False
        windows = list(dm.windows["train"])
        refs = non_overlapping(windows, dm.clip_frames)
        videos = sorted({windows[i][0] for i in refs})
        desc = (f"{len(refs)} non-overlapping clips of the training split ({len(windows)} windows) of "
                f"{len(videos)} video(s), in time order per video, videos in sorted-path order")
        augmented = train.transform is not None or train.time_reverse
        return Stream("video", desc, train, plain, refs=refs, length=len(refs), tag_epoch=augmented,
                      extra={"videos": [str(dm.video_paths[v]) for v in videos]}, **common)
    if isinstance(getattr(dm, "datasets", None), dict):  # moving digits
        from framecast.data.moving_mnist import MovingDigits

        dm.setup("fit")
        ds = dm.datasets["train"]
        if isinstance(ds, MovingDigits):
            desc = (f"the training sequences of moving digits drawn from seed {ds.seed} "
                    f"(sequence i from default_rng([{ds.stream}, {ds.seed}, i])), in the order 0, 1, 2, ...")
            return Stream("moving digits", desc, ds, ds, length=None, **common)
        desc = f"the {len(ds)} training sequences of the sequence file, in file order"
        return Stream("moving digits", desc, ds, ds, length=len(ds), **common)
    raise ConfigError(f"data: {type(dm).__name__} has no training split that codelength can index; it takes "
                      f"framecast.data.MovingMNISTDataModule or framecast.data.video.VideoClipDataModule")


class StreamClips(Dataset):
    """Stream clips ``indices`` as training items ``{"context", "target"}`` (``augmented``: with the data's
    augmentation; an index ``epoch * n + j`` from an epoch-tagging sampler is item ``j`` of that epoch)."""

    def __init__(self, stream: Stream, indices: Sequence[int], purpose: str, augmented: bool = False):
        self.stream, self.indices, self.purpose, self.augmented = stream, list(indices), purpose, augmented

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch, j = divmod(int(index), len(self.indices))
        return self.stream.item(self.indices[j], self.purpose, augmented=self.augmented, epoch=epoch)


def tail_size(seen: int, fraction: float) -> int:
    """Clips of the ``seen`` ones held out for early stopping: ``round(fraction * seen)``, at least 1 and
    leaving at least 1 to train on."""
    return min(seen - 1, max(1, round(fraction * seen)))


class StreamDataModule(L.LightningDataModule):
    """The data of one block's fit: stream clips ``0 .. seen - 1`` (those already transmitted), the last
    ``val_clips`` of them the validation split (the held-out tail), the others the training split.

    Args:
        data: the config's data section (``{"class_path", "init_args"}``) whose training split is the stream.
        seen: clips transmitted before the block this fit's model codes.
        val_clips: the held-out tail, ``1 <= val_clips < seen``.
    """

    def __init__(self, data: dict[str, Any], seen: int, val_clips: int = 1):
        super().__init__()
        from framecast.loading import instantiate

        if not isinstance(seen, int) or seen < 2:
            raise ValueError(f"data.init_args.seen must be an integer >= 2 (clips transmitted), got {seen!r}")
        if not isinstance(val_clips, int) or not 1 <= val_clips < seen:
            raise ValueError(f"data.init_args.val_clips must be in [1, {seen - 1}], got {val_clips!r}")
        self.save_hyperparameters()
        # built outside Lightning's CLI context, which would hand the inner module *these* hyper-parameters
        self.inner = contextvars.Context().run(instantiate, data)
        self.seen, self.val_clips = seen, val_clips
        self.channels = self.inner.channels
        self.size = tuple(self.inner.size)
        self.context_frames, self.horizon_frames = self.inner.context_frames, self.inner.horizon_frames
        self.fps = getattr(self.inner, "fps", None)
        self.batch_size = int(self.inner.batch_size)
        self.num_workers = int(getattr(self.inner, "num_workers", 0) or 0)
        self.seed = int((getattr(self.inner, "hparams", None) or {}).get("seed", 0) or 0)
        self.stream: Stream | None = None
        self.datasets: dict[str, StreamClips] = {}

    def describe(self) -> dict[str, str]:
        out = dict(self.inner.describe()) if hasattr(self.inner, "describe") else {}
        out["prequential"] = (f"stream clips 0..{self.seen - 1} (train 0..{self.seen - self.val_clips - 1}, "
                              f"held-out tail {self.seen - self.val_clips}..{self.seen - 1})")
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.stream is not None:
            return
        stream = build_stream(self.inner)
        if stream.length is not None and stream.length < self.seen:
            raise ValueError(f"the stream has {stream.length} clips, fewer than the {self.seen} transmitted")
        cut = self.seen - self.val_clips
        self.stream = stream
        self.datasets = {"train": StreamClips(stream, range(cut), "train", augmented=True),
                         "val": StreamClips(stream, range(cut, self.seen), "val")}

    def train_dataloader(self) -> DataLoader:
        from framecast.data.samplers import EpochShuffleSampler, ResumableDataLoader, TrainerProgress

        ds = self.datasets["train"]
        sampler = EpochShuffleSampler(len(ds), seed=self.seed, tag_epoch=self.stream.tag_epoch)
        return ResumableDataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0, progress=TrainerProgress(self))

    def val_dataloader(self) -> DataLoader:
        from framecast.data.samplers import EvalSampler

        ds = self.datasets["val"]
        return DataLoader(ds, batch_size=self.batch_size, sampler=EvalSampler(len(ds), split="val"),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
