"""Golden tests: framecast's predrnn / predrnn_v2 against the official thuml/predrnn-pytorch code.

``tests/data/*_official_*.torch`` hold tiny official networks (2 layers x 8 channels, filter 3, 16x16 frames,
4 context + 3 predicted frames, batch 2), their inputs, the official teacher forcing masks (scheduled
sampling and reverse scheduled sampling, in the official patch-space layout) and what the official forward
returned; ``tests/data/README.md`` says how they were made. With the official weights loaded
(:func:`load_official_state_dict`), framecast's rollout gives the official next frames, training loss and
decoupling loss to float precision.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from framecast.models import build_model
from framecast.models.predrnn import load_official_state_dict
from framecast.module import FramePredictionModule

DATA = Path(__file__).parent / "data"
CASES = sorted(p.stem for p in DATA.glob("*_official_*.torch"))
MASKS = ("scheduled", "reverse")
ATOL, RTOL = 1e-6, 1e-5  # the outputs are O(0.05); measured differences are <= 5e-7


pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str) -> dict:
    return torch.load(DATA / f"{name}.torch", weights_only=True)


def faithful_options(cfg: dict) -> dict:
    """framecast's options for the official network of ``cfg`` (the official argument names)."""
    options = {"channels": cfg["img_channel"], "hidden": cfg["num_hidden"], "kernel_size": cfg["filter_size"],
               "patch_size": cfg["patch_size"], "layer_norm": bool(cfg["layer_norm"]), "bias": False}
    if cfg["model_name"] == "predrnn_v2":
        options.update(shared_adapter=True, decouple_weight=cfg["decouple_beta"])
    return options


def faithful_model(case: dict):
    model = build_model(case["config"]["model_name"], **faithful_options(case["config"]))
    load_official_state_dict(model, case["state_dict"])
    return model.eval()


def teacher_mask(official: torch.Tensor, input_length: int, reverse: bool) -> torch.Tensor:
    """The official ``real_input_flag (B, S, H/p, W/p, p*p*C)`` -> framecast's ``teacher_mask (B, T - 2)``.

    The official flag is one value per (clip, input) broadcast over the patch tensor. With scheduled
    sampling it covers the inputs from ``input_length`` on (the context inputs are always true); with
    reverse scheduled sampling every input after the first, as framecast's mask does.
    """
    per = official.flatten(2)
    assert (per == per[..., :1]).all(), "the official mask is constant per clip and step"
    per = per[..., 0].float()
    if reverse:
        return per
    return torch.cat([torch.ones(per.shape[0], input_length - 1), per], dim=1)


def frames_of(case: dict) -> torch.Tensor:
    return case["frames"].permute(0, 1, 4, 2, 3)  # official (B, T, H, W, C) -> (B, T, C, H, W)


def rollout(model, case: dict, kind: str):
    cfg = case["config"]
    frames, ti = frames_of(case), cfg["input_length"]
    mask = teacher_mask(case[kind]["mask"], ti, kind == "reverse")
    with torch.no_grad():
        return model.rollout(frames[:, :ti], cfg["total_length"] - ti, target=frames[:, ti:], teacher_mask=mask)


def test_golden_files_are_small_and_complete():
    assert len(CASES) == 6
    names = {(c.split("_official_")[0], c.split("_official_")[1]) for c in CASES}
    for model in ("predrnn", "predrnn_v2"):
        assert {(model, "p1"), (model, "p2")} <= names
    for name in CASES:
        assert (DATA / f"{name}.torch").stat().st_size < 300_000
        case = load(name)
        assert set(MASKS) <= set(case)
        for kind in MASKS:
            flags = case[kind]["mask"].flatten(2)[..., 0]
            assert 0 < flags.float().mean() < 1  # the mask mixes truth and predictions


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", CASES)
def test_rollout_equals_official(name, kind):
    case = load(name)
    roll = rollout(faithful_model(case), case, kind)
    expected = case[kind]["next_frames"].permute(0, 1, 4, 2, 3)
    assert roll.frames.shape == expected.shape
    torch.testing.assert_close(roll.frames, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", CASES)
def test_training_loss_equals_official(name, kind):
    """The official loss (MSE over all next frames, + decouple_beta x decoupling loss for v2) is the training
    loss of framecast's module with ``loss: mse, loss_frames: all`` under the same mask."""
    case = load(name)
    cfg = case["config"]
    opts = faithful_options(cfg)
    module = FramePredictionModule(
        model=cfg["model_name"], hidden=opts.pop("hidden"), **{k: opts.pop(k) for k in
                                                                ("channels", "kernel_size", "patch_size")},
        model_options=opts, loss="mse", loss_frames="all")
    load_official_state_dict(module.model, case["state_dict"])
    frames, ti = frames_of(case), cfg["input_length"]
    mask = teacher_mask(case[kind]["mask"], ti, kind == "reverse")
    module.teacher_forcing.mask = lambda *args, **kwargs: mask
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step({"context": frames[:, :ti], "target": frames[:, ti:]}, 0)
    torch.testing.assert_close(loss, case[kind]["loss"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("predrnn_v2")])
def test_decoupling_loss_equals_official(name, kind):
    case = load(name)
    model = faithful_model(case)
    roll = rollout(model, case, kind)
    torch.testing.assert_close(roll.aux_loss / model.decouple_weight, case[kind]["decouple_loss"],
                               atol=1e-6, rtol=1e-6)


def test_the_mask_matters():
    """The golden outputs discriminate: the two masks, and the plain rollout, give other frames."""
    case = load("predrnn_v2_official_p2")
    a, b = (case[k]["next_frames"] for k in MASKS)
    assert (a - b).abs().max() > 1e-2
    model = faithful_model(case)
    cfg = case["config"]
    frames, ti = frames_of(case), cfg["input_length"]
    with torch.no_grad():
        plain = model.rollout(frames[:, :ti], cfg["total_length"] - ti).frames
    assert (plain - a.permute(0, 1, 4, 2, 3)).abs().max() > 1e-2


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", ["predrnn_official_p2", "predrnn_v2_official_p2"])
def test_default_layout_differs_only_by_biases_and_adapters(name, kind):
    """framecast's default predrnn (gate and head biases; for v2 one adapter per layer) is the official
    network plus those parameters: with the biases zero and every adapter the official one it gives the
    official rollout, and those are its only extra parameters."""
    case = load(name)
    faithful = faithful_model(case)
    opts = faithful_options(case["config"])
    del opts["bias"]
    opts.pop("shared_adapter", None)
    default = build_model(case["config"]["model_name"], **opts)
    assert default.bias and not getattr(default, "shared_adapter", False)
    extra = set(default.state_dict()) - set(faithful.state_dict())
    expected_extra = {f"cells.{i}.conv_x.bias" for i in range(2)} | {"head.conv.bias"}
    if name.startswith("predrnn_v2"):
        expected_extra.add("adapters.1.weight")
    assert extra == expected_extra
    assert set(faithful.state_dict()) <= set(default.state_dict())
    sd = dict(faithful.state_dict())
    for key in extra:
        sd[key] = torch.zeros_like(default.state_dict()[key])
    if "adapters.1.weight" in extra:
        sd["adapters.1.weight"] = sd["adapters.0.weight"]
    default.load_state_dict(sd)
    expected = case[kind]["next_frames"].permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(rollout(default.eval(), case, kind).frames, expected, atol=ATOL, rtol=RTOL)
    if name.startswith("predrnn_v2"):
        torch.testing.assert_close(rollout(default, case, kind).aux_loss / default.decouple_weight,
                                   case[kind]["decouple_loss"], atol=1e-6, rtol=1e-6)


def test_rgb_patch_channels_are_reordered():
    """The official patches order channels (dy, dx, c), pixel_unshuffle (c, dy, dx): loading without the
    reordering would not give the official frames (the rgb golden passes only with it)."""
    case = load("predrnn_official_p2_rgb")
    model = faithful_model(case)
    official = case["state_dict"]["cell_list.0.conv_x.0.weight"]
    loaded = model.cells[0].conv_x.weight.detach()
    assert not torch.equal(loaded, official)
    # framecast input channel c*4 + k is the official k*3 + c
    for c in range(3):
        for k in range(4):
            assert torch.equal(loaded[:, c * 4 + k], official[:, k * 3 + c])
    head = model.head.conv.weight.detach()
    assert torch.equal(head[1 * 4 + 2], case["state_dict"]["conv_last.weight"][2 * 3 + 1])


def test_layer_norm_needs_a_per_channel_affine():
    """The official LayerNorm([C, H, W]) affine maps onto framecast's per-channel GroupNorm affine only when
    it is the same over space (the golden's is; so is the official initialisation); else it raises."""
    case = load("predrnn_v2_official_p2_layernorm")
    sd = dict(case["state_dict"])
    w = sd["cell_list.1.conv_h.1.weight"].clone()
    w[0, 0, 0] += 0.5
    sd["cell_list.1.conv_h.1.weight"] = w
    model = build_model("predrnn_v2", **faithful_options(case["config"]))
    with pytest.raises(ValueError, match="varies over space"):
        load_official_state_dict(model, sd)


def test_load_official_state_dict_checks_the_architecture():
    case = load("predrnn_v2_official_p1")
    opts = faithful_options(case["config"])
    load_official_state_dict(build_model("predrnn_v2", **opts), {"net_param": case["state_dict"]})  # Model.save
    with pytest.raises(ValueError, match="bias must be false"):
        load_official_state_dict(build_model("predrnn_v2", **{**opts, "bias": True}), case["state_dict"])
    with pytest.raises(ValueError, match="shared_adapter must be true"):
        load_official_state_dict(build_model("predrnn_v2", **{**opts, "shared_adapter": False}), case["state_dict"])
    with pytest.raises(ValueError, match="layer_norm must be false"):
        load_official_state_dict(build_model("predrnn_v2", **{**opts, "layer_norm": True}), case["state_dict"])
    v1 = {k: v for k, v in opts.items() if k not in ("shared_adapter", "decouple_weight")}
    with pytest.raises(ValueError, match="predrnn_v2's"):
        load_official_state_dict(build_model("predrnn", **v1), case["state_dict"])
    with pytest.raises(TypeError):
        load_official_state_dict(build_model("convlstm", hidden=[8, 8], kernel_size=3), case["state_dict"])


def test_faithful_options_are_typed_and_checked():
    from framecast.models.registry import model_options

    assert model_options("predrnn")["bias"] == (bool, True)
    assert model_options("predrnn_v2")["bias"] == (bool, True)
    assert model_options("predrnn_v2")["shared_adapter"] == (bool, False)
    with pytest.raises(ValueError, match="model.model_options.shared_adapter"):
        build_model("predrnn_v2", shared_adapter="yes")
    with pytest.raises(ValueError, match="equal hidden sizes"):
        build_model("predrnn_v2", hidden=[8, 4], shared_adapter=True)
    shared = build_model("predrnn_v2", hidden=[8, 8, 8], kernel_size=3, shared_adapter=True, bias=False)
    assert len(shared.adapters) == 1 and shared.head.conv.bias is None
    assert all(cell.conv_x.bias is None for cell in shared.cells)
    # the one adapter gets the gradient of every layer's decoupling term
    roll = shared.rollout(torch.rand(1, 3, 1, 16, 16), 2)
    roll.aux_loss.backward()
    assert shared.adapters[0].weight.grad.abs().sum() > 0
