"""The timing harness of ``framecast speed``: candidates, interleaved rounds, statistics and memory.

A :class:`Candidate` is something timed once per round (a zero-argument callable and the tensors it keeps
between calls); :func:`run_rounds` runs every candidate once per round, the order reversed every other
round, so a change in the machine's load hits all of them alike; :func:`stats` summarizes the counted
rounds; :class:`Memory` measures the working memory of one call (CUDA allocator, or ``torch.profiler``'s
allocation events on the CPU) and :func:`tensor_bytes` the tensors a candidate keeps.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of ``values``."""
    v = sorted(values)
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1 = q3 = v[0]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q1, "q3": q3, "n": len(v),
            "all": list(values)}


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level writes to stderr (the profiler's notes about absent GPUs) for the block."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def tensor_bytes(*objs: Any) -> int:
    """Bytes of the distinct tensor storages in ``objs`` (tensors, modules, optimizers, dicts, lists)."""
    seen: set[int] = set()
    total = 0

    def visit(o: Any) -> None:
        nonlocal total
        if isinstance(o, Tensor):
            st = o.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
        elif isinstance(o, nn.Module):
            for t in list(o.parameters()) + list(o.buffers()):
                visit(t)
        elif isinstance(o, torch.optim.Optimizer):
            for state in o.state.values():
                visit(state)
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)

    for o in objs:
        visit(o)
    return total


class Memory:
    """The working memory of one call: the peak of the tensor memory it allocates above what was allocated
    before it (activations, gradients, temporaries). CUDA: ``torch.cuda.max_memory_allocated`` minus
    ``memory_allocated`` before; CPU: the peak of the running sum of ``torch.profiler``'s allocation and free
    records (``profile_memory``), on an extra untimed call."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = (
            "CUDA allocator: max_memory_allocated during one call minus memory_allocated before it"
            if device.type == "cuda" else
            "torch.profiler(profile_memory=True): peak of the tensor allocations of one call above those alive before it"
        )

    def rise(self, fn: Callable[[], Any]) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        from torch.profiler import ProfilerActivity, profile

        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        # the raw allocation (+bytes) and free (-bytes) records, in time order: parsing them into per-op events
        # (prof.events()) takes seconds for a model's step, this takes milliseconds
        records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                         if e.name() == "[memory]")
        cur = peak = 0
        for _, m in records:
            cur += m
            peak = max(peak, cur)
        return peak


class Candidate:
    """Something timed once per round: a name, a zero-argument callable and the tensors it keeps between calls
    (parameters, optimizer state, inputs), whose bytes plus the working memory make its peak memory."""

    def __init__(self, name: str, fn: Callable[[], Any], state: tuple = ()):
        self.name, self.fn, self.state = name, fn, state
        self.times: list[float] = []
        self.peak_rise_bytes: int | None = None

    def run(self, device: torch.device, record: bool) -> None:
        synchronize(device)
        t0 = time.perf_counter()
        self.fn()
        synchronize(device)
        if record:
            self.times.append(time.perf_counter() - t0)

    def measure_memory(self, mem: Memory) -> None:
        self.peak_rise_bytes = mem.rise(self.fn)

    @property
    def state_bytes(self) -> int:
        return tensor_bytes(*self.state)


def run_rounds(candidates: list[Candidate], rounds: int, warmup: int, device: torch.device, mem: Memory | None,
               desc: str, progress: bool) -> None:
    """``warmup + rounds`` rounds; every round runs each candidate once, the order reversed every other round.
    After the warm-up, one extra untimed call of each candidate with a state measures its memory."""
    from tqdm.auto import tqdm

    for r in tqdm(range(warmup + rounds), desc=desc, disable=not progress, file=sys.stderr, leave=False):
        if r == warmup and mem is not None:
            for c in candidates:
                if c.state:
                    c.measure_memory(mem)
        order = candidates if r % 2 == 0 else candidates[::-1]
        for c in order:
            c.run(device, record=r >= warmup)


def memory_format(ndim: int, channels_last: bool) -> torch.memory_format:
    """Channels-last for a 4-d tensor, channels-last-3d for a 5-d one (when ``channels_last``), else contiguous."""
    if channels_last and ndim in (4, 5):
        return torch.channels_last if ndim == 4 else torch.channels_last_3d
    return torch.contiguous_format


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with every 4-d and 5-d parameter and buffer (convolution weights) in channels-last memory
    format (``Module.to(memory_format=...)`` refuses the 5-d weights of a ``Conv3d``), in place."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.dim() in (4, 5):
            t.data = t.data.contiguous(memory_format=memory_format(t.dim(), True))
    return module


def random_batch(b: int, dims: dict[str, int], device: torch.device, seed: int = 0) -> dict[str, Tensor]:
    """A batch of ``b`` random clips of the shape ``dims`` describes (``context``, ``target``), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    shape = (dims["channels"], dims["height"], dims["width"])
    return {"context": torch.rand(b, dims["context"], *shape, generator=g).to(device),
            "target": torch.rand(b, dims["horizon"], *shape, generator=g).to(device)}
