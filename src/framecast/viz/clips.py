"""The clips a picture shows: the first clips of a split, and the same clips longer for a "dream".

Data modules come from :mod:`framecast.loading` (never built here); this module only picks clips of them.
"""

from __future__ import annotations

from torch import Tensor

from framecast.errors import ConfigError, InputError
from framecast.loading import batches, rebuild, shrink

SPLITS = ("train", "val", "test")
# the stage whose split checks cover only this split ("predict": none, for train; an empty train split then
# fails in first_clips), so a video too short for a val clip can still show its training clips
STAGES = {"train": "predict", "val": "validate", "test": "test"}


def loader(dm, split: str = "test"):
    """The data loader of ``split`` of ``dm``, set up for that split only."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    dm.setup(STAGES[split])
    return getattr(dm, f"{split}_dataloader")()


def first_clips(dm, n: int, split: str = "test") -> tuple[Tensor, Tensor]:
    """The first ``n`` clips of ``split``: ``context (n, T_ctx, C, H, W)``, ``target (n, T_pred, C, H, W)``
    (fewer where the split has fewer)."""
    import torch

    parts = list(batches(loader(dm, split), n))
    if not parts:
        raise InputError(f"the {split} split of {type(dm).__name__} has no clips: give another --split, or data "
                         "with more frames")
    return torch.cat([b["context"] for b in parts]), torch.cat([b["target"] for b in parts])


def dream_clips(dm, horizon: int, clips: int, split: str) -> tuple[Tensor, Tensor] | None:
    """The first ``clips`` clips of ``split`` with ``horizon`` future frames each (``dm`` rebuilt with that
    horizon), or None where the data cannot make clips that long. Moving digits give the same clips as
    ``dm``, only longer; videos may cut their clips elsewhere."""
    try:
        long = shrink(rebuild(dm, horizon_frames=horizon), split, clips)
        context, target = first_clips(long, clips, split)
    except Exception:  # noqa: BLE001  (too short videos, no clips in the split...: fall back)
        return None
    return (context, target) if target.shape[1] == horizon and len(target) == clips else None
