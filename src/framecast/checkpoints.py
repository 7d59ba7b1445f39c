"""Checkpoint safety and resumption for the command line.

* Every checkpoint framecast reads is unpickled with ``torch.load(weights_only=True)``: tensors and plain
  data only. A file that carries any other pickled object (which could run code while it is being loaded)
  is refused with :class:`UnsafeCheckpointError`, naming the file. :class:`SafeCheckpointIO` does this for
  Lightning's ``--ckpt_path`` (fit resume, validate, test, predict), whatever ``weights_only`` asks for.
* ``--ckpt_path last`` finds the newest ``last.ckpt`` of earlier runs under the run folder
  (:func:`find_last_checkpoint`); Lightning alone only looks in the folder of the *new* run's logger version.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from framecast.errors import InputError


class UnsafeCheckpointError(InputError):
    """A checkpoint holds pickled objects other than tensors and plain data; it was not loaded."""


def refusal(path, error: BaseException) -> UnsafeCheckpointError:
    first = str(error).strip().splitlines()
    detail = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
    return UnsafeCheckpointError(
        f"refused to load checkpoint {path}: it holds pickled Python objects other than tensors and plain data, "
        f"which could run code when unpickled ({detail}). framecast loads checkpoints with "
        f"torch.load(weights_only=True) only; a checkpoint written by framecast never needs more."
    )


def safe_load(path, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` (local or fsspec path), with a clear error naming the file."""
    try:
        return pl_load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise refusal(path, e) from None


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, except that loading is always ``weights_only=True`` (see :func:`safe_load`)."""

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        if not get_filesystem(path).exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return safe_load(path, map_location=map_location)


def use_safe_checkpoint_io(trainer) -> None:
    """Make ``trainer`` load checkpoints with :class:`SafeCheckpointIO` (unless it was given its own IO)."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO()


def find_last_checkpoint(trainer) -> Path | None:
    """The newest ``last*.ckpt`` of this run folder, or None.

    With ``checkpoint.dirpath`` set, that folder; else every ``checkpoints/`` folder under the logger's
    folder and ``trainer.default_root_dir`` (each run's logger version has its own).
    """
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and getattr(ckpt, "dirpath", None):
        roots, pattern = [Path(ckpt.dirpath)], "last*.ckpt"
    else:
        roots = [Path(trainer.default_root_dir)]
        for logger in trainer.loggers:
            if getattr(logger, "save_dir", None):
                roots.append(Path(logger.save_dir))
        pattern = "**/checkpoints/last*.ckpt"
    found = {p.resolve() for root in roots if root.is_dir() for p in root.glob(pattern) if p.is_file()}
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
