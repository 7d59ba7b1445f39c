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

Under DDP the samplers shard the epoch's order themselves (see :class:`EpochSampler`), so ``devices=W`` with
batch ``b`` trains on exactly the batches of one process with batch ``W*b``; every process skips its own
consumed batches on resume. The fixed validation and test clips are split by :class:`EvalSampler`, which
(unlike ``DistributedSampler``) never repeats a clip.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler


def _place(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``, each taken from the initialised process group where None (one process
    without one)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
    return num_replicas, rank


class _EpochOrderSampler(DistributedSampler):
    """An epoch's order of indices (:meth:`order`), sharded over the processes of a distributed run.

    A ``DistributedSampler`` (so Lightning does not wrap it in another one that would shuffle it again):
    with ``W`` processes, process ``r`` takes positions ``r, r + W, r + 2W, ...`` of the epoch's order
    (padded by wrapping around to equal lengths, as ``DistributedSampler`` does). With batch ``b`` per
    process, step ``k`` of all processes together covers positions ``k*b*W .. (k+1)*b*W - 1``: the very
    batch that one process with batch ``b*W`` takes at step ``k``. ``num_replicas`` / ``rank`` default to
    the initialised process group, else one process.
    """

    def __init__(self, n: int, num_replicas: int | None = None, rank: int | None = None):
        num_replicas, rank = _place(num_replicas, rank)
        self.n, self.epoch = n, 0
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = -(-n // num_replicas) if n else 0
        self.total_size = self.num_samples * num_replicas
        self.shuffle, self.drop_last, self.seed = False, False, 0

    def order(self) -> np.ndarray:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        if self.total_size > len(order):
            order = np.resize(order, self.total_size)  # wraps around, like DistributedSampler's padding
        return iter(order[self.rank : self.total_size : self.num_replicas].tolist())


class EvalSampler(DistributedSampler):
    """Clips ``rank, rank + W, rank + 2W, ...`` of ``0 .. n-1`` for process ``rank`` of ``W`` (all of them in
    order for one process): every validation or test clip is evaluated exactly once, with no padding, so
    metrics summed over the processes are those of one process (:class:`framecast.module.FramePredictionModule`
    reduces sums and counts, not means). A ``DistributedSampler``, so Lightning does not replace it.

    Raises ``ValueError`` when there are fewer clips than processes (a process without clips would skip
    the evaluation loop that the others wait in).
    """

    def __init__(self, n: int, num_replicas: int | None = None, rank: int | None = None, split: str = "val"):
        num_replicas, rank = _place(num_replicas, rank)
        if 0 < n < num_replicas:
            raise ValueError(f"the {split} split has {n} clip{'s' if n > 1 else ''} for {num_replicas} processes: give it at least one "
                             f"clip per process (data.init_args.{split}_size or a longer video), or use fewer devices")
        self.n, self.num_replicas, self.rank = n, num_replicas, rank
        self.shuffle, self.drop_last, self.seed, self.epoch = False, False, 0, 0

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))


class EpochSampler(_EpochOrderSampler):
    """Yields ``epoch * n .. epoch * n + n - 1`` (this process's share of them): fresh generated sequences
    every epoch, reproducible from the seed and the epoch (Lightning calls :meth:`set_epoch`; a resumed
    loader restores it)."""

    def order(self) -> np.ndarray:
        return np.arange(self.epoch * self.n, (self.epoch + 1) * self.n)


class EpochShuffleSampler(_EpochOrderSampler):
    """A random permutation of ``0 .. n-1`` per epoch, drawn from ``(seed, epoch)`` alone (this process's
    share of it).

    Unlike ``RandomSampler`` (which draws from torch's global random state, not saved in checkpoints), the
    order of every epoch is the same on every run and after a resume. With ``tag_epoch`` the indices are
    ``epoch * n + i``, so a dataset can seed per-clip augmentation from the index (see
    :class:`framecast.data.video_dataset.VideoClipDataset`) and reduce it with ``% n``.
    """

    def __init__(self, n: int, seed: int = 0, tag_epoch: bool = False, num_replicas: int | None = None,
                 rank: int | None = None):
        super().__init__(n, num_replicas, rank)
        self.seed, self.tag_epoch = seed, tag_epoch

    def order(self) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return order + self.epoch * self.n if self.tag_epoch else order


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
        return {"epoch": sampler_epoch(self), "batches": int(done), "step_clips": self._step_clips()}

    def _step_clips(self) -> int:
        """Clips per step over all processes (batch size x processes sharing the sampler)."""
        return int(self.batch_size or 1) * int(getattr(self.sampler, "num_replicas", 1) or 1)

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        epoch, done = state.get("epoch"), int(state.get("batches") or 0)
        saved, now = int(state.get("step_clips") or self._step_clips()), self._step_clips()
        if saved != now:  # another batch size or number of processes: the same clips, in other batches
            if (done * saved) % now:
                warnings.warn(f"resuming with {now} clips per step instead of {saved}: {done * saved} clips of "
                              f"this epoch were trained on, so {done * saved % now} of them are trained on again",
                              stacklevel=2)
            done = done * saved // now
        if done >= len(self):  # saved at the end of an epoch: the next one starts from its beginning
            epoch, done = (epoch + 1 if epoch is not None else None), 0
        if epoch is not None:
            set_sampler_epoch(self, epoch)
        self._skip = done


class _CountingSampler:
    """Counts the batches drawn from ``sampler`` in its current iteration (the fallback progress)."""

    def __init__(self, sampler, loader: ResumableDataLoader):
        self.sampler, self.loader, self.count = sampler, loader, 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        self.loader._drawn = self
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
