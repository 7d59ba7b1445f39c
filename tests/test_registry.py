"""Tests of the model registry (``framecast.models.registry``): registration, option checks, citations."""

from __future__ import annotations

from typing import Literal, Optional

import pytest
import torch
from torch import Tensor, nn

from framecast.models import (
    BASELINES,
    MODELS,
    ConvLSTM,
    CopyLast,
    Predictor,
    PredRNNv2,
    build_model,
    list_models,
    model_options,
    register_model,
)
from framecast.models.registry import EMPTY, matches

SHARED = {"channels": 1, "hidden": [4], "kernel_size": 3, "patch_size": 1, "residual": False,
          "head": "deterministic", "num_mixtures": 5}


@pytest.fixture
def toy():
    """A toy predictor registered as ``toy`` for one test, then removed again."""

    @register_model("toy")
    class Toy(Predictor):
        """A 1x1-conv recurrent toy, https://example.org."""

        def __init__(self, gain: float = 1.0, mode: Literal["add", "mul"] = "add",
                     sizes: list[int] | None = None, **kwargs):
            super().__init__(**kwargs)
            self.gain, self.mode, self.sizes = gain, mode, sizes
            self.conv = nn.Conv2d(self.in_channels + self.hidden[-1], self.hidden[-1], 1)

        def init_state(self, batch, height, width, like):
            return like.new_zeros(batch, self.hidden[-1], height, width)

        def step(self, x: Tensor, state):
            h = torch.tanh(self.conv(torch.cat([x, state], 1))) * self.gain
            return h, h, 0.0

    yield Toy
    MODELS.pop("toy", None)


def error(name: str, **options) -> str:
    with pytest.raises(ValueError) as info:
        build_model(name, **options)
    return str(info.value)


def test_registered_names():
    assert {"convlstm", "convgru", "predrnn", "predrnn_v2", "predrnn_pp", "mim", "e3d_lstm", "mau"} <= set(MODELS)
    assert set(BASELINES) == {"copy_last", "linear"}
    assert MODELS["convlstm"] is ConvLSTM and BASELINES["copy_last"] is CopyLast
    assert list_models() == sorted([*MODELS, *BASELINES])
    assert list_models("baseline") == ["copy_last", "linear"]


def test_a_registered_toy_predictor_is_built_by_name(toy):
    assert "toy" in MODELS and "toy" in list_models("predictor")
    model = build_model("toy", gain=2, mode="mul", **SHARED)  # an int is a float
    assert isinstance(model, toy) and model.gain == 2 and model.mode == "mul"
    assert model(torch.rand(2, 3, 1, 8, 8), 2).shape == (2, 2, 1, 8, 8)
    options = model_options("toy")
    assert list(options)[:3] == ["gain", "mode", "sizes"] and options["gain"] == (float, 1.0)
    assert "hidden" in options and "num_mixtures" in options  # the shared options, via **kwargs
    assert "mode" in error("toy", mode="max") and "model.model_options.mode" in error("toy", mode="max")
    assert "model.model_options.sizes" in error("toy", sizes=[1, "2"])
    build_model("toy", sizes=None, hidden=[4])
    build_model("toy", sizes=(1, 2), hidden=[4])


def test_the_toy_is_gone_after_its_test():
    assert "toy" not in MODELS
    assert "toy" in error("toy")


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_model("convlstm")(type("Other", (Predictor,), {}))
    with pytest.raises(ValueError, match="already registered"):
        register_model("linear")(type("Other", (Predictor,), {}))
    assert register_model("convlstm")(ConvLSTM) is ConvLSTM  # the same class again is fine
    with pytest.raises(ValueError, match="kind"):
        register_model("x", kind="fancy")


def test_unknown_model_names_the_field_and_the_registered_names():
    message = error("convlsm", **SHARED)
    for needle in ["'convlsm'", "model.model", "convlstm", "convgru", "predrnn_v2", "copy_last", "linear"]:
        assert needle in message, (needle, message)
    with pytest.raises(ValueError, match="model.model"):
        model_options("convlsm")


def test_unknown_option_names_the_field_and_lists_the_valid_ones_with_types():
    message = error("predrnn_v2", foo=1)
    assert message.startswith("model.model_options.foo: predrnn_v2 takes no option 'foo'; its options are: ")
    for needle in ["decouple_weight (float, default 0.1)", "layer_norm (bool, default False)",
                   "hidden (int | list[int], default 64)", "head (str, default 'deterministic')"]:
        assert needle in message, (needle, message)
    assert "model.model_options.layer_norm" in error("convlstm", layer_norm=True)  # not a ConvLSTM option


@pytest.mark.parametrize("name,options,field,needles", [
    ("predrnn", {"layer_norm": "yes"}, "model.model_options.layer_norm", ["bool", "'yes'"]),
    ("predrnn", {"layer_norm": 1}, "model.model_options.layer_norm", ["bool", "1 (int)"]),
    ("predrnn_v2", {"decouple_weight": "0.1"}, "model.model_options.decouple_weight", ["float", "'0.1'"]),
    ("predrnn_v2", {"decouple_weight": True}, "model.model_options.decouple_weight", ["float", "True"]),
    ("convlstm", {"hidden": "64"}, "model.hidden", ["int | list[int]", "'64'"]),
    ("convgru", {"hidden": [8, 8.0]}, "model.hidden", ["int | list[int]", "[8, 8.0]"]),
    ("convgru", {"kernel_size": True}, "model.kernel_size", ["int", "True"]),
    ("convlstm", {"residual": "false"}, "model.residual", ["bool", "'false'"]),
    ("predrnn", {"head": 1}, "model.head", ["str"]),
    ("convlstm", {"num_mixtures": 2.5}, "model.num_mixtures", ["int", "2.5"]),
])
def test_a_value_of_the_wrong_type_names_the_field(name, options, field, needles):
    message = error(name, **{**SHARED, **options})
    assert message.startswith(field + ":"), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_right_types_build():
    model = build_model("predrnn_v2", decouple_weight=0, layer_norm=True, **{**SHARED, "hidden": 4})
    assert isinstance(model, PredRNNv2) and model.decouple_weight == 0 and model.layer_norm


def test_baselines_ignore_the_shared_options_and_reject_others():
    assert isinstance(build_model("copy_last", **SHARED), CopyLast)
    assert model_options("copy_last") == {} and model_options("linear") == {}
    message = error("linear", layer_norm=True, **SHARED)
    assert "model.model_options.layer_norm" in message and "baseline" in message


def test_model_options_of_predrnn_v2():
    options = model_options("predrnn_v2")
    assert options["decouple_weight"] == (float, 0.1)
    assert options["layer_norm"] == (bool, False)
    assert set(SHARED) <= set(options)
    assert all(default is not EMPTY for _, default in options.values())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_predictor_cites_its_paper_and_code(name):
    doc = MODELS[name].__doc__ or ""
    assert "http" in doc and "Paper:" in doc and "Code:" in doc, name
    assert "(B, T_ctx, C, H, W)" in doc and "(B, horizon, C, H, W)" in doc, name


def test_matches():
    assert matches(1, float) and matches(1.5, float) and not matches(True, float)
    assert matches(3, int) and not matches(True, int) and not matches(3.0, int)
    assert matches([1, 2], list[int]) and not matches([1, True], list[int]) and not matches(1, list[int])
    assert matches(None, Optional[int]) and not matches("2", Optional[int])  # noqa: UP045  (the old spelling)
    assert matches(None, int | None) and matches(2, int | None) and not matches(2.5, int | None)
    assert matches("a", Literal["a", "b"]) and not matches("c", Literal["a", "b"])
    assert matches((0.9, 0.99), tuple[float, float]) and not matches((0.9,), tuple[float, float])
