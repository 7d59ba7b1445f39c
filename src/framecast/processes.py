"""Several processes for ``framecast benchmark``: start them, give each its share of the clips, merge results.

The benchmark takes the same flags as ``framecast fit`` for this: ``--trainer.strategy ddp
--trainer.devices N [--trainer.accelerator cpu|gpu] [--trainer.num_nodes M]``. Lightning Fabric starts
the processes (by running the same command again, as the Trainer does) and sets up ``torch.distributed``.
Process ``r`` of ``N`` evaluates clips ``r, r + N, r + 2N, ...`` of the split, so every clip is evaluated
exactly once (no padding with repeated clips, unlike ``DistributedSampler``), and the exact sums the
metrics are made of are gathered and merged, so N processes report the numbers one process would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset


@dataclass
class Processes:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order, on every process."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def shard(self, loader, clips: int | None) -> DataLoader:
        """A loader over this process's share of the first ``clips`` clips (all: None) of ``loader``.

        The share is every ``world``-th clip starting at ``rank``; batch size, workers and collation
        are ``loader``'s.
        """
        n = len(loader.dataset)
        if clips is not None:
            n = min(n, clips)
        return DataLoader(Subset(loader.dataset, range(self.rank, n, self.world)), batch_size=loader.batch_size,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory)


TRAINER_FLAGS = {"--trainer.strategy": "strategy", "--trainer.devices": "devices",
                 "--trainer.accelerator": "accelerator", "--trainer.num_nodes": "num_nodes"}


def start(strategy: str | None, devices: str | None, accelerator: str | None, num_nodes: int | None) -> Processes:
    """Start the processes Lightning Fabric's ``strategy``/``devices``/``accelerator``/``num_nodes`` ask for
    (each left None takes Fabric's default) and return this one's place among them."""
    from lightning.fabric import Fabric
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        count: int | str = int(devices) if devices is not None else "auto"
    except ValueError:
        count = devices  # "auto" or a list of device indices such as "0,1"
    try:
        fabric = Fabric(accelerator=accelerator or "auto", strategy=strategy or "auto", devices=count,
                        num_nodes=num_nodes or 1)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:  # Lightning names the bad value
        raise ValueError(f"--trainer.* options: {e}") from e
    fabric.launch()
    return Processes(rank=fabric.global_rank, world=fabric.world_size, device=fabric.device)
