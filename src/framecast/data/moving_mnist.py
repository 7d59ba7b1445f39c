"""Moving MNIST, generated on the fly and deterministic from a seed.

Srivastava, Mansimov, Salakhutdinov, "Unsupervised Learning of Video Representations using LSTMs",
ICML 2015: ``num_digits`` 28x28 digits on a 64x64 canvas, each starting at a random position with a random
direction and moving at a fixed speed, bouncing off the edges; digits are combined by pixel-wise max.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from framecast.data.glyphs import builtin_digits
from framecast.data.mnist_idx import read_idx_images
from framecast.data.samplers import (
    EpochSampler,
    EpochShuffleSampler,
    EvalSampler,
    ResumableDataLoader,
    TrainerProgress,
)
from framecast.errors import InputError


def trajectory(rng: np.random.Generator, length: int, extent: float, speed: float) -> np.ndarray:
    """Top-left positions ``(length, 2)`` (y, x) of one digit, in pixels within ``[0, extent]``.

    Random start and direction, ``speed`` pixels per frame; a step that would leave ``[0, extent]`` is
    reflected at the edge (position mirrored, velocity component negated), so every step moves exactly
    ``speed`` pixels along the path and the digit never leaves the canvas.
    """
    pos = rng.uniform(0, extent, size=2)
    theta = rng.uniform(0, 2 * math.pi)
    vel = speed * np.array([math.sin(theta), math.cos(theta)])
    out = np.empty((length, 2))
    if extent <= 0:  # the digit fills the canvas: it cannot move (and reflecting in [0, 0] would never end)
        out[:] = 0.0
        return out
    for t in range(length):
        out[t] = pos
        pos = pos + vel
        for k in range(2):
            while pos[k] < 0 or pos[k] > extent:  # a loop only for speeds above the extent
                pos[k] = -pos[k] if pos[k] < 0 else 2 * extent - pos[k]
                vel[k] = -vel[k]
    return out


def render(digits: list[np.ndarray], paths: list[np.ndarray], canvas: int) -> np.ndarray:
    """Frames ``(T, canvas, canvas)`` uint8: each digit pasted at its rounded position, combined by max."""
    frames = np.zeros((len(paths[0]), canvas, canvas), np.uint8)
    for digit, path in zip(digits, paths):
        d = digit.shape[0]
        for t, (y, x) in enumerate(np.rint(path).astype(int)):
            np.maximum(frames[t, y : y + d, x : x + d], digit, out=frames[t, y : y + d, x : x + d])
    return frames


# Separate seed streams: sequence i of a split is drawn from default_rng([stream, seed, i]), so no choice of
# seeds can make a training sequence repeat a validation or test one.
STREAMS = {"train": 0, "val": 1, "test": 2}


class MovingDigits(Dataset):
    """Sequence ``i`` is drawn from ``np.random.default_rng([stream, seed, i])``: any index, the same sequence
    every time, and the splits' streams never collide (:data:`STREAMS`).

    Items are ``{"context": (T_ctx, 1, S, S), "target": (T_pred, 1, S, S)}`` float32 in [0, 1].
    """

    def __init__(self, digits: np.ndarray, length: int, seed: int, context: int, horizon: int,
                 num_digits: int = 2, canvas: int = 64, speed: float = 3.6, stream: int = 0):
        self.digits, self.length, self.seed, self.stream = digits, length, seed, stream
        self.context, self.horizon = context, horizon
        self.num_digits, self.canvas, self.speed = num_digits, canvas, speed

    def __len__(self) -> int:
        return self.length

    def sequence(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames ``(T, S, S)`` and digit paths ``(num_digits, T, 2)`` of sequence ``index``."""
        rng = np.random.default_rng([self.stream, self.seed, index])
        t = self.context + self.horizon
        extent = self.canvas - self.digits.shape[1]
        picks = rng.integers(0, len(self.digits), self.num_digits)
        paths = [trajectory(rng, t, extent, self.speed) for _ in range(self.num_digits)]
        return render([self.digits[i] for i in picks], paths, self.canvas), np.stack(paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames = torch.from_numpy(self.sequence(index)[0]).unsqueeze(1).float().div_(255)
        return {"context": frames[: self.context], "target": frames[self.context :]}


class FixedSet(Dataset):
    """A generated split held in memory as uint8, so every epoch and run sees the same clips."""

    def __init__(self, source: MovingDigits):
        self.frames = torch.from_numpy(np.stack([source.sequence(i)[0] for i in range(len(source))])).unsqueeze(2)
        self.context = source.context

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames = self.frames[index].float().div_(255)
        return {"context": frames[: self.context], "target": frames[self.context :]}


class MovingMNISTDataModule(L.LightningDataModule):
    """Moving digits for next-frame prediction (Srivastava et al. 2015).

    Args:
        digits: ``builtin`` (glyphs drawn by framecast from a font, no download: a number from them is not
            comparable with any paper) or a path to MNIST idx images (``.gz`` or not, or a folder holding
            them). The digits are split 80/10/10 into train, val and test pools (90/10 train/val with
            ``test_path``), so evaluation digits are never seen in training.
        test_path: the standard protocol (Srivastava et al. 2015; PredRNN, OpenSTL): train and validation
            generated on the fly from ``digits`` (the MNIST *training* images), and the test split is the
            fixed sequences of ``mnist_test_seq.npy`` (``(20, 10000, 64, 64)`` uint8) in file order, the first
            ``context_frames`` of each as context and the next ``horizon_frames`` as target; all 10,000 unless
            ``test_size`` is set.
        path: optional ``mnist_test_seq.npy`` used for *every* split (first 80 % train, 10 % val, 10 % test):
            not the standard protocol, for when no MNIST training digits are at hand.
        context_frames, horizon_frames: frames in / frames to predict (10 and 10 in the literature).
        num_digits, canvas, speed: digits per sequence, canvas side in pixels, pixels moved per frame.
        train_size: training sequences per epoch (fresh ones each epoch, drawn from ``seed`` and the epoch).
        val_size, test_size: fixed sequences drawn from ``eval_seed``; identical on every run (``test_size``
            None: 1,000 generated, or every sequence of ``test_path``).
        channels: 1, or 3 to repeat the grey level into RGB.

    Batches: ``{"context": (B, T_ctx, C, S, S), "target": (B, T_pred, C, S, S)}`` float32 in [0, 1].
    """

    def __init__(
        self,
        digits: str = "builtin",
        path: str | None = None,
        test_path: str | None = None,
        context_frames: int = 10,
        horizon_frames: int = 10,
        num_digits: int = 2,
        canvas: int = 64,
        speed: float = 3.6,
        train_size: int = 10_000,
        val_size: int = 256,
        test_size: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        channels: int = 1,
        seed: int = 0,
        eval_seed: int = 1_000,
    ):
        super().__init__()
        for name, v in [("context_frames", context_frames), ("horizon_frames", horizon_frames),
                        ("num_digits", num_digits), ("train_size", train_size), ("val_size", val_size),
                        ("test_size", 1 if test_size is None else test_size), ("batch_size", batch_size)]:
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"data.init_args.{name} must be a positive integer, got {v!r}")
        if channels not in (1, 3):
            raise ValueError(f"data.init_args.channels must be 1 or 3, got {channels!r}")
        if canvas < 28:
            raise ValueError(f"data.init_args.canvas must be at least the digit size 28, got {canvas}")
        if path is not None and test_path is not None:
            raise ValueError("data.init_args.path and data.init_args.test_path exclude each other: test_path is the "
                             "standard protocol (generated training sequences, the file's sequences as test), path "
                             "cuts every split from one file")
        if speed <= 0:
            raise ValueError(f"data.init_args.speed must be > 0 pixels per frame, got {speed}")
        self.save_hyperparameters()
        self.digits, self.path, self.test_path = digits, path, test_path
        self.context_frames, self.horizon_frames = context_frames, horizon_frames
        self.channels, self.size, self.fps = channels, (canvas, canvas), None
        self.batch_size, self.num_workers = batch_size, num_workers
        self.datasets: dict[str, Dataset] = {}

    def digit_pools(self) -> dict[str, np.ndarray]:
        images = builtin_digits() if self.digits == "builtin" else read_idx_images(self.digits)
        n = len(images)
        if self.test_path is not None:  # the test sequences come from their file: 90/10 train/val
            a = int(0.9 * n)
            return {"train": images[:a], "val": images[a:], "test": images[:0]}
        a, b = int(0.8 * n), int(0.9 * n)
        return {"train": images[:a], "val": images[a:b], "test": images[b:]}

    def describe(self) -> dict[str, str]:
        """What the data is, exactly, for results tables: the digits, the test sequences and the protocol."""
        hp = self.hparams
        if self.path is not None:
            return {"protocol": "every split cut from one sequence file (not the standard protocol)",
                    "sequences": f"{self.path} (80/10/10)"}
        if self.digits == "builtin":
            digits = "builtin font glyphs drawn by framecast (not MNIST: not comparable with published tables)"
        else:
            digits = f"MNIST idx images {self.digits} ({len(read_idx_images(self.digits))} digits)"
        out = {"digits": digits}
        if self.test_path is not None:
            n = np.load(self.test_path, mmap_mode="r").shape[1]
            used = n if hp.test_size is None else min(n, hp.test_size)
            out["protocol"] = "standard Moving MNIST (Srivastava et al. 2015): generated train/val, fixed test file"
            out["test"] = f"{self.test_path} ({used} of {n} sequences, file order)"
        else:
            out["protocol"] = "generated sequences for every split (digit pools 80/10/10)"
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        if self.path is not None:
            self.datasets = self._from_npy(Path(self.path))
            return
        pools = self.digit_pools()
        common = {"context": hp.context_frames, "horizon": hp.horizon_frames, "num_digits": hp.num_digits,
                  "canvas": hp.canvas, "speed": hp.speed}
        self.datasets["train"] = MovingDigits(pools["train"], hp.train_size, hp.seed, stream=STREAMS["train"], **common)
        self.datasets["val"] = FixedSet(MovingDigits(pools["val"], hp.val_size, hp.eval_seed, stream=STREAMS["val"],
                                                     **common))
        if self.test_path is not None:
            self.datasets["test"] = self._test_file(Path(self.test_path))
        else:
            test_size = 1_000 if hp.test_size is None else hp.test_size
            self.datasets["test"] = FixedSet(MovingDigits(pools["test"], test_size, hp.eval_seed,
                                                          stream=STREAMS["test"], **common))

    def _sequences(self, path: Path, field: str) -> torch.Tensor:
        """``(N, T, 1, H, W)`` uint8 from a file in the layout of ``mnist_test_seq.npy``, ``(T, N, H, W)``."""
        if not path.is_file():
            raise InputError(f"data.init_args.{field} {path} does not exist (expected mnist_test_seq.npy, "
                             f"(20, 10000, 64, 64) uint8)")
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise InputError(f"data.init_args.{field} {path} is not a readable .npy file: {e}") from None
        t = self.context_frames + self.horizon_frames
        if arr.ndim != 4 or arr.shape[0] < t or arr.dtype != np.uint8:
            raise InputError(f"data.init_args.{field} {path}: expected (T >= {t}, N, H, W) uint8 like "
                             f"mnist_test_seq.npy, got {arr.shape} {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr[:t].transpose(1, 0, 2, 3))).unsqueeze(2)

    def _test_file(self, path: Path) -> Dataset:
        seqs = self._sequences(path, "test_path")
        if tuple(seqs.shape[-2:]) != tuple(self.size):
            raise InputError(f"data.init_args.test_path {path} holds {seqs.shape[-2]}x{seqs.shape[-1]} frames but "
                             f"data.init_args.canvas is {self.size[0]}: set canvas to {seqs.shape[-1]}")
        if self.hparams.test_size is not None:
            seqs = seqs[: self.hparams.test_size]
        ds = FixedSet.__new__(FixedSet)
        ds.frames, ds.context = seqs, self.context_frames
        return ds

    def _from_npy(self, path: Path) -> dict[str, Dataset]:
        seqs = self._sequences(path, "path")
        n = len(seqs)
        cuts = {"train": (0, int(0.8 * n)), "val": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
        out = {}
        for split, (a, b) in cuts.items():
            ds = FixedSet.__new__(FixedSet)
            ds.frames, ds.context = seqs[a:b], self.context_frames
            out[split] = ds
        self.size = tuple(seqs.shape[-2:])
        return out

    def _loader(self, split: str) -> DataLoader:
        """A fixed split, each clip on one process (:class:`EvalSampler`)."""
        sampler = EvalSampler(len(self.datasets[split]), split=split)
        return DataLoader(self.datasets[split], batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=self._collate)

    def _collate(self, items):
        batch = torch.utils.data.default_collate(items)
        if self.channels == 3:
            batch = {k: v.expand(-1, -1, 3, -1, -1).contiguous() for k, v in batch.items()}
        return batch

    def train_dataloader(self) -> DataLoader:
        """Training batches in an order fixed by the seed and the epoch, resumable mid-epoch
        (:mod:`framecast.data.samplers`): fresh generated sequences per epoch, or a seeded shuffle of
        the training part of ``mnist_test_seq.npy``."""
        ds = self.datasets["train"]
        sampler = EpochSampler(len(ds)) if isinstance(ds, MovingDigits) else EpochShuffleSampler(len(ds), self.hparams.seed)
        return ResumableDataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0, collate_fn=self._collate,
                                   progress=TrainerProgress(self))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
