"""The one evaluation loop: score predictors on the same clips with the metric registry.

Used by training (validation and test), the fit summary, ``framecast benchmark`` and ``framecast
visualize``, so the same checkpoint and clips give the same numbers everywhere.

* :class:`Candidate`: one predictor (a model, a checkpoint's model or a baseline) with what scoring needs
  (its distribution head, or fitted Laplace scales for the codelength of a deterministic prediction);
* :func:`score`: add one batch's values of the asked metrics to a :class:`MetricAccumulator`;
* :func:`evaluate`: every candidate on every batch, under ``torch.inference_mode``, with a progress bar;
* :func:`limit`: at most ``clips`` clips of a loader (the last batch cut).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from framecast.metrics import METRICS, MetricAccumulator, metric

DISTRIBUTION_UNAVAILABLE = "no distribution: a deterministic predictor needs Laplace scales fitted on data not scored"


@dataclass
class Candidate:
    """One predictor scored on the clips.

    Attributes:
        name: its name in tables.
        kind: ``model`` (a module being trained), ``checkpoint`` or ``baseline``.
        model: a framecast predictor (``rollout``) or a baseline (``model(context, horizon)``).
        scales: discretized-Laplace scales ``(T,)`` for the codelength of a deterministic prediction.
    """

    name: str
    kind: str
    model: nn.Module
    checkpoint: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    data_hparams: dict[str, Any] = field(default_factory=dict)
    scales: Tensor | None = None

    @classmethod
    def for_model(cls, name: str, model: nn.Module, kind: str = "model", **kw) -> Candidate:
        return cls(name=name, kind=kind, model=model, **kw)

    @classmethod
    def baseline(cls, name: str) -> Candidate:
        from framecast.models import BASELINES, build_model

        if name not in BASELINES:
            from framecast.errors import ConfigError

            raise ConfigError(f"unknown baseline {name!r}; baselines are {sorted(BASELINES)}")
        return cls(name=name, kind="baseline", model=build_model(name).eval())

    @property
    def head(self):
        return getattr(self.model, "head", None)

    @property
    def has_distribution(self) -> bool:
        return hasattr(self.head, "bits")

    @property
    def codelength(self) -> str:
        return "model distribution (logistic mixture)" if self.has_distribution else "discretized Laplace"

    def predict(self, context: Tensor, horizon: int) -> tuple[Tensor, Tensor | None]:
        """``(prediction (B, horizon, C, H, W), distribution params (B, horizon, P, H, W) or None)``."""
        if not hasattr(self.model, "rollout"):
            return self.model(context, horizon), None
        roll = self.model.rollout(context, horizon)
        return roll.prediction(), roll.prediction_params()


def default_metrics(candidates: Sequence[Candidate] = ()) -> list[str]:
    """The metrics every tool reports by default: all registered ones except LPIPS (which needs weights)."""
    return [m for m in METRICS if METRICS[m].needs != "lpips"]


def score(acc: MetricAccumulator, pred: Tensor, target: Tensor, metrics: Sequence[str], *, head=None,
          params: Tensor | None = None, scales: Tensor | None = None, lpips=None) -> None:
    """Add the values of ``metrics`` for one batch ``pred, target (B, T, C, H, W)`` to ``acc``.

    A distribution metric uses ``head`` and ``params`` where given, else ``scales``; with neither it is
    recorded as unavailable. An LPIPS metric needs ``lpips`` (a :class:`framecast.metrics.LPIPS`)."""
    for name in metrics:
        m = metric(name)
        if name in acc.unavailable:
            continue
        if m.needs == "prediction":
            acc.add(name, m.fn(pred, target))
        elif m.needs == "distribution":
            if (head is None or params is None) and scales is None:
                acc.set_unavailable(name, DISTRIBUTION_UNAVAILABLE)
                continue
            acc.add(name, m.fn(pred, target, head=head, params=params, scales=scales))
        elif m.needs == "lpips":
            reason = "LPIPS was not loaded" if lpips is None else lpips.unavailable_for(tuple(target.shape[-2:]))
            if reason is not None:
                acc.set_unavailable(name, reason)
                continue
            try:
                acc.add(name, m.fn(pred, target, net=lpips))
            except Exception as err:  # noqa: BLE001  (an optional metric never stops an evaluation)
                acc.set_unavailable(name, f"LPIPS failed: {type(err).__name__}: {err}")


def limit(loader: Iterable[dict[str, Tensor]], clips: int | None = None) -> Iterator[dict[str, Tensor]]:
    """The loader's batches, the last one cut so that at most ``clips`` clips come out (all: None)."""
    if clips is not None and clips <= 0:
        return
    seen = 0
    for batch in loader:
        n = len(batch["context"])
        if clips is not None and seen + n > clips:
            batch = {k: v[: clips - seen] for k, v in batch.items()}
            n = clips - seen
        seen += n
        yield batch
        if clips is not None and seen >= clips:
            return


@torch.inference_mode()
def evaluate(candidates: Sequence[Candidate], batches: Iterable[dict[str, Tensor]],
             metrics: Sequence[str] | None = None, device: str | torch.device | None = None,
             progress: str | None = None, total: int | None = None, lpips=None) -> dict[str, MetricAccumulator]:
    """Every metric of every candidate on the same clips: ``{candidate name: accumulator}``.

    ``batches`` yield ``{"context": (B, T_ctx, C, H, W), "target": (B, T, C, H, W)}``; each candidate predicts
    the target's horizon from the context. ``progress``: a progress-bar label (None: no bar)."""
    from tqdm.auto import tqdm

    metrics = list(default_metrics(candidates) if metrics is None else metrics)
    for name in metrics:
        metric(name)  # an unknown name fails before any work
    if device is None:
        device = next((p.device for c in candidates for p in c.model.parameters()), torch.device("cpu"))
    accs = {c.name: MetricAccumulator() for c in candidates}
    for batch in tqdm(batches, total=total, desc=progress, unit="batch", disable=progress is None, file=sys.stderr):
        context, target = batch["context"].to(device), batch["target"].to(device)
        horizon = target.shape[1]
        for c in candidates:
            pred, params = c.predict(context, horizon)
            score(accs[c.name], pred, target, metrics, head=c.head if c.has_distribution else None,
                  params=params, scales=c.scales, lpips=lpips)
    return accs
