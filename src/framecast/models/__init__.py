"""Predictors by registered name. ``build_model("convlstm", channels=1, hidden=[64, 64])``.

Every model file registers its classes with :func:`register_model`; importing the file here is what
registers them, so a new model is one file plus one import line below (the registry itself is
``framecast.models.registry``).
"""

from __future__ import annotations

from framecast.models.base import Predictor, Rollout
from framecast.models.baselines import CopyLast, Linear
from framecast.models.convgru import ConvGRU
from framecast.models.convlstm import ConvLSTM
from framecast.models.e3d_lstm import E3DLSTM
from framecast.models.mau import MAU
from framecast.models.mim import MIM
from framecast.models.phydnet import PhyDNet
from framecast.models.predrnn import PredRNN, PredRNNv2
from framecast.models.predrnn_pp import PredRNNpp
from framecast.models.registry import (
    BASELINES,
    MODELS,
    build_model,
    check_options,
    list_models,
    model_options,
    register_model,
    shared_options,
)
from framecast.models.simvp import SimVP
from framecast.models.tau import TAU
from framecast.models.window import WindowPredictor

__all__ = [
    "BASELINES",
    "E3DLSTM",
    "MAU",
    "MIM",
    "MODELS",
    "TAU",
    "ConvGRU",
    "ConvLSTM",
    "CopyLast",
    "Linear",
    "PhyDNet",
    "PredRNN",
    "PredRNNpp",
    "PredRNNv2",
    "Predictor",
    "Rollout",
    "SimVP",
    "WindowPredictor",
    "build_model",
    "check_options",
    "list_models",
    "model_options",
    "register_model",
    "shared_options",
]
