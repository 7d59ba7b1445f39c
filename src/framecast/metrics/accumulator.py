"""Exact averages over a whole split, on any number of processes.

:class:`MetricAccumulator` keeps, per metric, the sum over clips of its ``(B, T)`` values and the number of
clips, as ``torchmetrics`` states with ``dist_reduce_fx="sum"``: on several processes (each clip scored on
exactly one of them) :meth:`MetricAccumulator.sync` adds the sums and counts of every process, and only then
is anything divided. So the average is that over every clip, never a mean of batch or process means.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


class MetricAccumulator(Metric):
    """Exact per-step averages of ``(B, T)`` metric values over any number of batches and processes.

    ``add(name, values (B, T))``; ``per_step(name) -> (T,)``; ``mean(name) -> float``; ``clips``.
    A metric that cannot be computed is recorded with ``set_unavailable(name, reason)`` and then reported by
    ``unavailable[name]`` instead of a value. Sums are float64 (float32 on MPS).
    """

    full_state_update = False

    def __init__(self):
        super().__init__(sync_on_compute=False)
        self._metric_names: list[str] = []
        self.unavailable: dict[str, str] = {}

    def _ensure(self, name: str, steps: int, like: Tensor) -> None:
        if name in self._metric_names:
            return
        dtype = torch.float32 if like.device.type == "mps" else torch.float64
        self.add_state(f"sum_{name}", default=torch.zeros(steps, dtype=dtype, device=like.device), dist_reduce_fx="sum")
        self.add_state(f"count_{name}", default=torch.zeros((), dtype=dtype, device=like.device), dist_reduce_fx="sum")
        self._metric_names.append(name)

    def add(self, name: str, values: Tensor) -> None:
        """Add the values ``(B, T)`` of ``B`` clips."""
        if values.dim() != 2:
            raise ValueError(f"metric values must be (B, T), got {tuple(values.shape)}")
        self._ensure(name, values.shape[1], values)
        s = getattr(self, f"sum_{name}")
        setattr(self, f"sum_{name}", s + values.detach().to(s.device, s.dtype).sum(0))
        setattr(self, f"count_{name}", getattr(self, f"count_{name}") + values.shape[0])

    def update(self, name: str, values: Tensor) -> None:  # torchmetrics' name for add
        self.add(name, values)

    def compute(self) -> dict[str, Tensor]:
        return {name: self.per_step(name) for name in self.names()}

    def merge(self, other: MetricAccumulator) -> None:
        """Add ``other``'s clips (e.g. another process's): the averages are then those over both."""
        for name in other.names():
            s = getattr(other, f"sum_{name}")
            self._ensure(name, len(s), s)
            setattr(self, f"sum_{name}", getattr(self, f"sum_{name}") + s.to(getattr(self, f"sum_{name}").device))
            setattr(self, f"count_{name}", getattr(self, f"count_{name}") + getattr(other, f"count_{name}").item())
        self.unavailable.update(other.unavailable)

    def set_unavailable(self, name: str, reason: str) -> None:
        self.unavailable[name] = reason

    def names(self) -> list[str]:
        return [n for n in self._metric_names if n not in self.unavailable]

    def count(self, name: str) -> int:
        return int(getattr(self, f"count_{name}").item())

    @property
    def clips(self) -> int:
        """Clips scored (the largest count over the metrics; every metric is scored on every clip)."""
        return max((self.count(n) for n in self._metric_names), default=0)

    def per_step(self, name: str) -> Tensor:
        """The average over clips at each step ``(T,)`` (float64 on the CPU)."""
        if name in self.unavailable:
            raise KeyError(f"{name} is unavailable: {self.unavailable[name]}")
        if name not in self._metric_names:
            raise KeyError(f"{name} was not scored; scored: {self.names()}")
        return (getattr(self, f"sum_{name}") / getattr(self, f"count_{name}")).detach().cpu().double()

    def mean(self, name: str) -> float:
        """The average over steps (= over all clip-step pairs); ``inf`` where any step is ``inf``."""
        v = self.per_step(name)
        return math.inf if torch.isinf(v).any() else float(v.mean())

    def sync_all(self) -> None:
        """Add every process's sums and counts (torch.distributed), once, before reading the averages.

        A no-op on one process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            self.sync(should_sync=True, distributed_available=lambda: True)
            self._is_synced = False  # keep the synced values: the accumulator is read-only from here on
            self._cache = None
