"""The dataset of video clips cut from the decode cache, and its training augmentation.

:class:`VideoClipDataset` reads clips from memory-mapped cache files; :func:`check_augment` validates the
``augment`` option of :class:`~framecast.data.video.VideoClipDataModule` and :func:`augment_transform` builds
the torchvision transform it applies (the same random draw for every frame of a clip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from framecast.data.samplers import seeded_generator

AUGMENT_KEYS = ("hflip", "random_resized_crop", "time_reverse")


class VideoClipDataset(Dataset):
    """Clips cut from cached, decoded videos.

    frame_files: ``.npy`` files of uint8 ``(N, H, W, C)`` frames (opened lazily, memory-mapped, in
    each worker process). windows: ``(file index, start frame)`` per clip. transform: optional
    callable on the uint8 clip tensor ``(T, C, H, W)`` (the same random parameters for every
    frame). time_reverse: play each clip backwards with probability 0.5. seed: with augmentation, the
    random draws of item ``i`` come from ``(seed, i)`` alone; an index ``i >= len(self)`` is clip
    ``i % len(self)`` (the training sampler tags indices with the epoch, so every epoch draws anew), which
    makes the augmentation of every clip the same after a resume and in any worker process.

    Item: ``{"context": float32 (context_frames, C, H, W), "target": float32 (horizon_frames, C, H, W)}``
    in ``[0, 1]``.
    """

    def __init__(
        self,
        frame_files: list[Path],
        windows: list[tuple[int, int]],
        context_frames: int,
        horizon_frames: int,
        transform=None,
        time_reverse: bool = False,
        seed: int = 0,
    ):
        self.frame_files = [Path(p) for p in frame_files]
        self.windows = list(windows)
        self.context_frames = context_frames
        self.horizon_frames = horizon_frames
        self.transform = transform
        self.time_reverse = time_reverse
        self.seed = seed
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self):  # memmaps are reopened in each worker instead of being pickled
        return {**self.__dict__, "_arrays": None}

    def clip(self, index: int) -> torch.Tensor:
        """The uint8 clip ``(T, C, H, W)`` of window ``index``, before augmentation."""
        if self._arrays is None:
            self._arrays = [np.load(p, mmap_mode="r") for p in self.frame_files]
        video, start = self.windows[index]
        frames = np.array(self._arrays[video][start : start + self.context_frames + self.horizon_frames])
        return torch.from_numpy(frames).permute(0, 3, 1, 2)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip = self.clip(index % len(self.windows))
        if self.transform is not None or self.time_reverse:
            g = seeded_generator(self.seed, index)
            if self.transform is not None:  # torchvision draws from the global generator: fork and seed it
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(torch.randint(2**62, (), generator=g)))
                    clip = self.transform(clip)
            if self.time_reverse and torch.rand((), generator=g) < 0.5:
                clip = clip.flip(0)
        clip = clip.float().div_(255.0)
        return {"context": clip[: self.context_frames], "target": clip[self.context_frames :]}


def check_augment(augment: dict | None) -> dict:
    augment = dict(augment or {})
    unknown = set(augment) - set(AUGMENT_KEYS)
    if unknown:
        raise ValueError(f"unknown augment keys {sorted(unknown)}; known: {list(AUGMENT_KEYS)}")
    scale = augment.get("random_resized_crop")
    if scale is not None and (len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"augment.random_resized_crop must be a scale range [a, b] in (0, 1], got {scale}")
    return augment


def augment_transform(augment: dict, size: tuple[int, int]):
    """torchvision v2 transform for a uint8 clip ``(T, C, H, W)``: one random draw per clip."""
    steps = []
    if augment.get("random_resized_crop") is not None:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(augment["random_resized_crop"]), antialias=True))
    if augment.get("hflip"):
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return v2.Compose(steps) if steps else None
