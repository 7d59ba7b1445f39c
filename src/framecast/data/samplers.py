"""Training samplers and a data loader that resume mid-epoch exactly where a checkpoint left off.

A killed run resumed with ``--ckpt_path`` must see the same batches in the same order as a run that was
never interrupted. Lightning restores its loop counters (epoch, batch index) but not the position of a plain
``DataLoader``: it would start the epoch again from the first batch (and, for a sampler drawn from
``torch``'s global random state, in a different order). Here:

* the training samplers are pure functions of ``(seed, epoch)`` (:class:`EpochSampler` for generated data,
  :class:`EpochShuffleSampler` for a fixed set of clips), so the order of any epoch can be rebuilt;
* :class:`ResumableDataLoader` is *stateful* in Lightning's sense (``state_dict`` / ``load_state_dict``, saved
  under ``loops.fit_loop.state_dict.combined_loader`` in the checkpoint): it records the epoch and how many
  batches the training loop had taken, and after loading it sets its sampler to that epoch and skips those
  batches by their indices (no data is loaded for them).

Both keep working under ``DistributedSampler`` wrapping (DDP): every process skips its own consumed batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n .. epoch * n + n - 1``: fresh generated sequences every epoch, reproducible from
    the seed and the epoch (Lightning calls :meth:`set_epoch`; a resumed loader restores it)."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.n, (self.epoch + 1) * self.n))


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``0 .. n-1`` per epoch, drawn from ``(seed, epoch)`` alone.

    Unlike ``RandomSampler`` (which draws from torch's global random state, not saved in checkpoints), the
    order of every epoch is the same on every run and after a resume. With ``tag_epoch`` the indices are
    ``epoch * n + i``, so a dataset can seed per-clip augmentation from the index (see
    :class:`framecast.data.video.VideoClipDataset`) and reduce it with ``% n``.
    """

    def __init__(self, n: int, seed: int = 0, tag_epoch: bool = False):
        self.n, self.seed, self.tag_epoch, self.epoch = n, seed, tag_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        offset = self.epoch * self.n if self.tag_epoch else 0
        return iter((order + offset).tolist())


class _SkipFirst:
    """An index sampler whose first iteration leaves out its first ``skip`` batches (later ones are whole)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        it = iter(self.sampler)
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            if next(it, None) is None:
                break
        return it


def set_sampler_epoch(loader: DataLoader, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler and batch sampler's sampler (as Lightning does)."""
    seen = set()
    for obj in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if obj is not None and id(obj) not in seen and callable(getattr(obj, "set_epoch", None)):
            seen.add(id(obj))
            obj.set_epoch(epoch)


def sampler_epoch(loader: DataLoader) -> int | None:
    for obj in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if obj is not None and isinstance(getattr(obj, "epoch", None), int):
            return obj.epoch
    return None


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that Lightning can checkpoint and resume mid-epoch (see the module docstring).

    progress: a callable returning how many batches the training loop has taken in the current epoch
    (:class:`TrainerProgress` of the data module), or None. Lightning prefetches a batch ahead of the step
    it runs, so the loader cannot count this itself; without ``progress`` the count is the number of batches
    whose indices were drawn, exact only without prefetching.
    """

    def __init__(self, *args: Any, progress: Callable[[], int | None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._skip = 0  # batches to leave out at the start of the next iteration
        self._drawn: _CountingSampler | None = None
        self._skip_now = 0

    @property
    def _index_sampler(self):
        sampler = super()._index_sampler
        if self._skip_now:
            sampler = _SkipFirst(sampler, self._skip_now)
        return _CountingSampler(sampler, self)

    def __iter__(self):
        self._skip_now, self._skip = self._skip, 0
        try:
            return super().__iter__()
        finally:
            self._skip_now = 0

    def state_dict(self) -> dict[str, int | None]:
        done = self.progress() if self.progress is not None else None
        if done is None:
            done = self._drawn.count if self._drawn is not None else 0
        return {"epoch": sampler_epoch(self), "batches": int(done)}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        epoch, done = state.get("epoch"), int(state.get("batches") or 0)
        if done >= len(self):  # saved at the end of an epoch: the next one starts from its beginning
            epoch, done = (epoch + 1 if epoch is not None else None), 0
        if epoch is not None:
            set_sampler_epoch(self, epoch)
        self._skip = done


class _CountingSampler:
    """Counts the batches drawn from ``sampler`` in its current iteration (the fallback progress)."""

    def __init__(self, sampler, loader: ResumableDataLoader):
        self.sampler, self.count = sampler, 0
        loader._drawn = self

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        self.count = getattr(self.sampler, "skip", 0)
        for batch in self.sampler:
            self.count += 1
            yield batch


class TrainerProgress:
    """Batches the fit loop of ``holder.trainer`` has taken in its current epoch (None outside a Trainer).

    Lightning saves and restores this counter itself; reading it when the checkpoint is written gives the
    number of batches a resumed loader must skip, whatever the loop has prefetched.
    """

    def __init__(self, holder):
        self.holder = holder

    def __call__(self) -> int | None:
        try:
            trainer = self.holder.trainer
        except (AttributeError, RuntimeError):
            return None
        if trainer is None:
            return None
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)


def seeded_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded from the non-negative integers ``keys`` alone (no global random state)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1))
    return g
