"""Predictors by registered name. ``build_model("convlstm", channels=1, hidden=[64, 64])``."""

from __future__ import annotations

from torch import nn

from framecast.models.base import Predictor, Rollout
from framecast.models.baselines import CopyLast, Linear
from framecast.models.convgru import ConvGRU
from framecast.models.convlstm import ConvLSTM
from framecast.models.predrnn import PredRNN, PredRNNv2

MODELS: dict[str, type[nn.Module]] = {
    "convlstm": ConvLSTM,
    "convgru": ConvGRU,
    "predrnn": PredRNN,
    "predrnn_v2": PredRNNv2,
}
BASELINES: dict[str, type[nn.Module]] = {"copy_last": CopyLast, "linear": Linear}


def build_model(name: str, **options) -> nn.Module:
    """Build a registered predictor or baseline by name (options go to its constructor)."""
    if name in BASELINES:
        return BASELINES[name]()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (model.model); registered: {sorted(MODELS) + sorted(BASELINES)}")
    return MODELS[name](**options)


__all__ = [
    "BASELINES",
    "MODELS",
    "ConvGRU",
    "ConvLSTM",
    "CopyLast",
    "Linear",
    "PredRNN",
    "PredRNNv2",
    "Predictor",
    "Rollout",
    "build_model",
]
