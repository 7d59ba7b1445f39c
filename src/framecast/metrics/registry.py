"""The one metric registry: every metric framecast reports, with its exact convention.

A metric is a function ``fn(pred, target) -> (B, T)`` (one value per clip and horizon step) registered with
:func:`register_metric`, which records which way is better, its unit, its exact definition, what it needs
and which published tables use its convention. Every tool (validation and test in training, the fit
summary, ``framecast benchmark``, ``framecast visualize``) scores through
:func:`framecast.evaluation.score` with this registry, so the same clips give the same number everywhere.

``needs``:

* ``prediction``: the clipped predicted frames and the true frames;
* ``distribution``: a per-pixel distribution over the 256 levels (the model's own, or a discretized Laplace
  around a deterministic prediction with fitted scales);
* ``lpips``: local LPIPS weights (never downloaded).

Adding a metric: one function, decorated here with its definition, plus its known-answer test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

NEEDS = ("prediction", "distribution", "lpips")


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring)."""

    name: str
    fn: Callable[..., Tensor]
    better: str  # "lower" or "higher"
    unit: str
    definition: str
    needs: str = "prediction"
    tables: str = ""  # published tables that use this exact convention

    def describe(self) -> dict[str, str]:
        return {"better": self.better, "unit": self.unit, "definition": self.definition, "needs": self.needs,
                "tables": self.tables}


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, better: str, unit: str, definition: str, needs: str = "prediction",
                    tables: str = ""):
    """Decorator: register ``fn(pred, target) -> (B, T)`` as metric ``name`` (table order = registration order)."""
    if better not in ("lower", "higher"):
        raise ValueError(f"metric {name}: better must be 'lower' or 'higher', got {better!r}")
    if needs not in NEEDS:
        raise ValueError(f"metric {name}: needs must be one of {NEEDS}, got {needs!r}")

    def wrap(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, fn, better, unit, definition, needs, tables)
        return fn

    return wrap


def metric(name: str) -> Metric:
    """The registered metric ``name``; a clear error listing the registered ones otherwise."""
    if name not in METRICS:
        from framecast.errors import ConfigError

        raise ConfigError(f"unknown metric {name!r}; registered metrics: {', '.join(METRICS)}")
    return METRICS[name]


def pixel_metrics() -> list[str]:
    """Names of the metrics that need only the predicted and the true frames."""
    return [m.name for m in METRICS.values() if m.needs == "prediction"]
