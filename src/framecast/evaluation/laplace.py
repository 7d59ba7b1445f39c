"""Laplace scales for the codelength of deterministic predictors, fitted on clips that are not scored.

A candidate without a per-pixel distribution (a deterministic model, a baseline) gets its ``bits_per_pixel``
from a discretized Laplace around its clipped prediction, one scale per horizon step, fitted by maximum
likelihood (:class:`framecast.codelength.LaplaceFit`) on another split than the one scored: the validation
split when the test split is scored, the test split when the validation split is. :func:`fit_scales` runs
those candidates over the fit clips, merges the exact sufficient statistics of every process (``gather``),
so several processes fit the scales one process would, and sets each candidate's ``scales``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from framecast.errors import InputError


def fit_split(split: str) -> str:
    """The split the scales are fitted on when ``split`` is scored."""
    return "test" if split == "val" else "val"


def needs_scales(candidates: Sequence, metrics: Sequence[str]) -> list:
    """The candidates whose codelength needs fitted scales (none unless a distribution metric is asked)."""
    from framecast.metrics import METRICS

    if not any(METRICS[m].needs == "distribution" for m in metrics):
        return []
    return [c for c in candidates if not c.has_distribution]


def _one_process(obj: Any) -> list[Any]:
    return [obj]


@torch.inference_mode()
def fit_scales(candidates: Sequence, batches: Iterable[dict[str, Tensor]], device: str | torch.device = "cpu",
               split: str = "val", progress: str | None = None, total: int | None = None,
               gather: Callable[[Any], list[Any]] = _one_process) -> int:
    """Fit and set the Laplace scales of ``candidates`` on ``batches``; return the clips fitted on (all
    processes together).

    ``gather(obj)``: every process's ``obj`` (``torch.distributed.all_gather_object``), so the fit is that
    of every process's clips; the default is one process."""
    from tqdm.auto import tqdm

    from framecast.codelength import LaplaceFit

    if not candidates:
        return 0
    fits = {c.name: LaplaceFit() for c in candidates}
    n = 0
    for batch in tqdm(batches, total=total, desc=progress, unit="batch", disable=progress is None, file=sys.stderr):
        context, target = batch["context"].to(device), batch["target"].to(device)
        n += len(context)
        for c in candidates:
            pred, _ = c.predict(context, target.shape[1])
            fits[c.name].add(pred.clamp(0, 1).cpu(), target.cpu())
    gathered = gather((n, fits))
    if len(gathered) > 1:  # every process fits the same scales to everyone's pairs
        n, fits = 0, {c.name: LaplaceFit() for c in candidates}
        for n_r, fits_r in gathered:
            n += n_r
            for name, fit in fits_r.items():
                fits[name].merge(fit)
    if n == 0:
        raise InputError(f"the {split} split has no clips to fit the Laplace scales of the codelength on "
                         f"(give it clips, or leave bits_per_pixel out of --metrics)")
    for c in candidates:
        c.scales = fits[c.name].scales()
    return n
