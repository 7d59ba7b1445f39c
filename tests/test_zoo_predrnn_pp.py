"""PredRNN++ (``predrnn_pp``): golden tests against OpenSTL's PyTorch port, the wiring of the gradient highway
and the memory, the loader's checks, and the shipped configs.

``tests/data/predrnn_pp_golden_*.torch`` hold tiny OpenSTL ``PredRNNpp_Model`` networks (3 layers x 4 channels,
filter 3, 16x16 frames, 4 context + 3 predicted frames) with random weights, their inputs, per-clip teacher
forcing masks (scheduled and reverse scheduled sampling, in OpenSTL's patch-space layout) and what OpenSTL's
forward returned, computed in float64 from float32 weights and frames; ``tests/data/README.md`` says how.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from framecast.models import PredRNNpp, build_model
from framecast.models.predrnn_pp import CausalLSTMCell, GradientHighwayUnit, load_openstl_state_dict

DATA = Path(__file__).parent / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CASES = ["p1", "p2", "p2_rgb", "p2_layernorm"]
MASKS = ("scheduled", "reverse")
# float64: the same function, so only rounding (measured <= 2e-13); float32 against the float64 reference:
# float32 rounding grown over 6 steps of these deliberately strong random weights (measured <= 1.1e-4, layer norm)
TOL64 = {"atol": 1e-10, "rtol": 1e-10}
TOL32 = {"atol": 3e-4, "rtol": 1e-3}


pytestmark = pytest.mark.usefixtures("one_thread")


def load(tag: str) -> dict:
    return torch.load(DATA / f"predrnn_pp_golden_{tag}.torch", weights_only=True)


def faithful_options(cfg: dict) -> dict:
    return {
        "channels": cfg["img_channel"],
        "hidden": cfg["num_hidden"],
        "kernel_size": cfg["filter_size"],
        "patch_size": cfg["patch_size"],
        "layer_norm": bool(cfg["layer_norm"]),
        "bias": False,
    }


def faithful_model(case: dict, dtype=torch.float64) -> PredRNNpp:
    model = build_model("predrnn_pp", **faithful_options(case["config"]))
    load_openstl_state_dict(model, case["state_dict"])
    return model.to(dtype).eval()


def teacher_mask(case: dict, kind: str) -> torch.Tensor:
    """OpenSTL's ``mask_true (B, S, H/p, W/p, p*p*C)`` (one flag per clip and input) -> framecast's
    ``teacher_mask (B, T - 2)``: scheduled sampling covers the inputs from ``input_length`` on (the context is
    always the truth), reverse scheduled sampling every input after the first, as framecast's mask does."""
    official = case[kind]["mask"]
    per = official.flatten(2)
    assert (per == per[..., :1]).all()
    per = per[..., 0].float()
    if kind == "reverse":
        return per
    return torch.cat([torch.ones(per.shape[0], case["config"]["input_length"] - 1), per], dim=1)


def rollout(model, case: dict, kind: str, dtype=torch.float64):
    cfg = case["config"]
    frames = case["frames"].permute(0, 1, 4, 2, 3).to(dtype)  # official (B, T, H, W, C) -> (B, T, C, H, W)
    ti = cfg["input_length"]
    with torch.no_grad():
        return model.rollout(
            frames[:, :ti],
            cfg["total_length"] - ti,
            target=frames[:, ti:],
            teacher_mask=teacher_mask(case, kind).to(dtype),
        )


def expected(case: dict, kind: str) -> torch.Tensor:
    return case[kind]["next_frames"].permute(0, 1, 4, 2, 3)


# --- golden -----------------------------------------------------------------------------------------------
def test_golden_files_are_small_and_complete():
    assert sorted(p.name for p in DATA.glob("predrnn_pp_golden_*.torch")) == sorted(
        f"predrnn_pp_golden_{t}.torch" for t in CASES
    )
    for tag in CASES:
        assert (DATA / f"predrnn_pp_golden_{tag}.torch").stat().st_size < 200_000
        case = load(tag)
        assert case["config"]["model"] == "predrnn_pp" and len(case["config"]["num_hidden"]) == 3
        for kind in MASKS:
            flags = case[kind]["mask"].flatten(2)[..., 0]
            assert 0 < flags.float().mean() < 1  # the mask mixes truth and predictions
            assert case[kind]["next_frames"].dtype == torch.float64
            assert case[kind]["next_frames"].abs().mean() > 0.1  # the outputs are not vanishingly small


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("tag", CASES)
def test_rollout_equals_openstl(tag, kind):
    case = load(tag)
    roll = rollout(faithful_model(case), case, kind)
    assert roll.frames.shape == expected(case, kind).shape
    torch.testing.assert_close(roll.frames, expected(case, kind), **TOL64)
    # OpenSTL's training loss is the MSE over all next frames
    frames = case["frames"].permute(0, 1, 4, 2, 3).double()
    torch.testing.assert_close(F.mse_loss(roll.frames, frames[:, 1:]), case[kind]["loss"], **TOL64)
    roll32 = rollout(faithful_model(case, torch.float32), case, kind, torch.float32)
    torch.testing.assert_close(roll32.frames, expected(case, kind).float(), **TOL32)


def test_the_mask_and_the_weights_matter():
    """The golden outputs discriminate: the two masks, the plain rollout and other weights give other frames."""
    case = load("p2")
    a, b = (expected(case, k) for k in MASKS)
    assert (a - b).abs().max() > 0.1
    model = faithful_model(case)
    cfg = case["config"]
    frames = case["frames"].permute(0, 1, 4, 2, 3).double()
    with torch.no_grad():
        plain = model.rollout(
            frames[:, : cfg["input_length"]], cfg["total_length"] - cfg["input_length"]
        ).frames
        assert (plain - a).abs().max() > 0.1
        model.highway.conv_z.weight.mul_(1.01)  # even a 1 % change of the GHU's state weights shows
        assert (rollout(model, case, "scheduled").frames - a).abs().max() > 1e-4


@pytest.mark.parametrize("kind", MASKS)
def test_default_layout_differs_only_by_biases(kind):
    """framecast's default (gate biases in every ``conv_x`` and the GHU's, and the head's) is OpenSTL's network
    plus those parameters: with them zero it gives OpenSTL's rollout."""
    case = load("p2")
    faithful = faithful_model(case)
    opts = faithful_options(case["config"])
    del opts["bias"]
    default = build_model("predrnn_pp", **opts).double()
    extra = set(default.state_dict()) - set(faithful.state_dict())
    assert extra == {f"cells.{i}.conv_x.bias" for i in range(3)} | {"highway.conv_x.bias", "head.conv.bias"}
    assert set(faithful.state_dict()) <= set(default.state_dict())
    sd = dict(faithful.state_dict())
    for key in extra:
        sd[key] = torch.zeros_like(default.state_dict()[key])
    default.load_state_dict(sd)
    torch.testing.assert_close(rollout(default.eval(), case, kind).frames, expected(case, kind), **TOL64)


def test_rgb_patch_channels_are_reordered():
    case = load("p2_rgb")
    model = faithful_model(case)
    official = case["state_dict"]["cell_list.0.conv_x.0.weight"]
    loaded = model.cells[0].conv_x.weight.detach().float()
    assert not torch.equal(loaded, official)
    for c in range(3):  # framecast input channel c*4 + k is OpenSTL's k*3 + c
        for k in range(4):
            assert torch.equal(loaded[:, c * 4 + k], official[:, k * 3 + c])
    assert torch.equal(
        model.head.conv.weight.detach().float()[1 * 4 + 2], case["state_dict"]["conv_last.weight"][2 * 3 + 1]
    )


def test_loader_skips_only_openstls_unused_conv_o_and_checks_the_architecture():
    case = load("p1")
    sd = case["state_dict"]
    unused = {k for k in sd if ".conv_o." in k}
    assert unused == {f"cell_list.{i}.conv_o.0.weight" for i in range(3)}
    opts = faithful_options(case["config"])
    model = build_model("predrnn_pp", **opts)
    assert not any("conv_o." in k for k in model.state_dict())
    loaded = sum(v.numel() for k, v in sd.items() if k not in unused)
    assert loaded == sum(p.numel() for p in model.parameters())  # everything else is loaded
    load_openstl_state_dict(model, {"state_dict": {f"model.{k}": v for k, v in sd.items()}})  # a checkpoint
    with pytest.raises(ValueError, match="bias must be false"):
        load_openstl_state_dict(build_model("predrnn_pp", **{**opts, "bias": True}), sd)
    with pytest.raises(ValueError, match="layer_norm must be false"):
        load_openstl_state_dict(build_model("predrnn_pp", **{**opts, "layer_norm": True}), sd)
    with pytest.raises(ValueError, match="hidden sizes must be equal"):
        load_openstl_state_dict(build_model("predrnn_pp", **{**opts, "hidden": [4, 4, 8]}), sd)
    with pytest.raises(ValueError, match="head: deterministic"):
        load_openstl_state_dict(build_model("predrnn_pp", **{**opts, "residual": True}), sd)
    with pytest.raises(ValueError, match="unexpected weight"):
        load_openstl_state_dict(model, {**sd, "extra.weight": torch.zeros(1)})
    with pytest.raises(TypeError):
        load_openstl_state_dict(build_model("predrnn", hidden=[4, 4], kernel_size=3), sd)


def test_layer_norm_needs_a_per_channel_affine():
    """OpenSTL's LayerNorm([C, H, W]) affine maps onto framecast's per-channel one (the official TensorFlow
    tensor_layer_norm's) only when it is the same over space; else the loader raises."""
    case = load("p2_layernorm")
    sd = dict(case["state_dict"])
    w = sd["cell_list.1.conv_c2m.1.weight"].clone()
    w[0, 0, 0] += 0.5
    sd["cell_list.1.conv_c2m.1.weight"] = w
    with pytest.raises(ValueError, match="varies over space"):
        load_openstl_state_dict(build_model("predrnn_pp", **faithful_options(case["config"])), sd)


# --- the architecture -------------------------------------------------------------------------------------
def test_needs_two_layers_and_typed_options():
    from framecast.models.registry import model_options

    with pytest.raises(ValueError, match="model.hidden.*at least 2 layers"):
        build_model("predrnn_pp", hidden=[8])
    assert model_options("predrnn_pp")["bias"] == (bool, True)
    assert model_options("predrnn_pp")["layer_norm"] == (bool, False)
    with pytest.raises(ValueError, match="model.model_options.layer_norm"):
        build_model("predrnn_pp", layer_norm="yes")


def test_gradient_highway_unit_known_answer_and_init():
    torch.manual_seed(0)
    ghu = GradientHighwayUnit(2, 1, bias=True)
    assert ghu.conv_x.weight.abs().max() <= 1e-3 and ghu.conv_z.weight.abs().max() <= 1e-3  # OpenSTL's init
    assert torch.count_nonzero(ghu.conv_x.bias) == 0 and ghu.conv_z.bias is None
    with torch.no_grad():
        for conv in (ghu.conv_x, ghu.conv_z):
            conv.weight.normal_()
        ghu.conv_x.bias.normal_()
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(2, 2, 3, 3, generator=g), torch.randn(2, 2, 3, 3, generator=g)
    wx, wz, b = (
        ghu.conv_x.weight.detach()[..., 0, 0],
        ghu.conv_z.weight.detach()[..., 0, 0],
        ghu.conv_x.bias.detach(),
    )
    pre = torch.einsum("oi,bihw->bohw", wx, x) + torch.einsum("oi,bihw->bohw", wz, z) + b.view(1, -1, 1, 1)
    p, u = torch.tanh(pre[:, :2]), torch.sigmoid(pre[:, 2:])
    torch.testing.assert_close(ghu(x, z), u * p + (1 - u) * z)


def test_causal_lstm_reads_the_memory_of_another_size():
    cell = CausalLSTMCell(3, 8, 5, kernel_size=3)
    assert cell.conv_m.weight.shape == (24, 5, 3, 3) and cell.conv_c2m.weight.shape == (32, 8, 3, 3)
    h, c, m = cell(
        torch.rand(2, 3, 4, 4), torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 4, 4), torch.rand(2, 5, 4, 4)
    )
    assert h.shape == c.shape == m.shape == (2, 8, 4, 4)
    assert (h.abs() <= 1).all()  # o and the memory term are both tanh


def test_highway_between_the_first_two_layers_and_the_memory_zigzag():
    torch.manual_seed(0)
    model = PredRNNpp(channels=1, hidden=[8, 6, 4], kernel_size=3)
    calls = {i: [] for i in range(3)}
    hooks = [
        c.register_forward_hook(lambda mod, args, out, i=i: calls[i].append((args, out)))
        for i, c in enumerate(model.cells)
    ]
    ghu = []
    hooks.append(model.highway.register_forward_hook(lambda mod, args, out: ghu.append((args, out))))
    with torch.no_grad():
        model.rollout(torch.rand(2, 3, 1, 16, 16), 2)
    for hk in hooks:
        hk.remove()
    steps = 4
    assert len(ghu) == steps and all(len(c) == steps for c in calls.values())
    assert (
        torch.count_nonzero(ghu[0][0][1]) == 0 and torch.count_nonzero(calls[0][0][0][3]) == 0
    )  # z, M start at 0
    for t in range(steps):
        assert ghu[t][0][0] is calls[0][t][1][0]  # the GHU reads h^0_t
        assert calls[1][t][0][0] is ghu[t][1]  # layer 1 reads z_t
        assert calls[2][t][0][0] is calls[1][t][1][0]  # layer 2 reads h^1_t
        for layer in (1, 2):
            assert calls[layer][t][0][3] is calls[layer - 1][t][1][2]  # M climbs the stack
        if t > 0:
            assert ghu[t][0][1] is ghu[t - 1][1]  # z carries over
            assert calls[0][t][0][3] is calls[2][t - 1][1][2]  # the top's M enters the bottom next step


# --- configs ----------------------------------------------------------------------------------------------
def test_configs_are_openstls_setting_and_a_cpu_variant():
    lit = yaml.safe_load((CONFIGS / "moving_mnist_predrnn_pp.yaml").read_text())
    text = (CONFIGS / "moving_mnist_predrnn_pp.yaml").read_text()
    assert "OpenSTL configs/mmnist/PredRNNpp.py" in text
    m = lit["model"]
    assert (m["model"], m["hidden"], m["kernel_size"], m["patch_size"], m["lr"]) == (
        "predrnn_pp",
        [128] * 4,
        5,
        4,
        1e-4,
    )
    assert m["teacher_forcing"] == "scheduled_sampling" and lit["data"]["init_args"]["batch_size"] == 16
    assert lit["trainer"]["max_steps"] == 200 * 10000 // 16  # 200 epochs
    cpu = yaml.safe_load((CONFIGS / "moving_mnist_predrnn_pp_cpu.yaml").read_text())
    assert cpu["model"]["model"] == "predrnn_pp" and cpu["model"]["hidden"] == [32, 32]


def test_cpu_config_fits_a_few_steps(tmp_path, capsys):
    from framecast.cli import main

    code = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "moving_mnist_predrnn_pp_cpu.yaml"),
            "--trainer.max_steps",
            "2",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.val_check_interval",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
            "--data.init_args.train_size",
            "4",
            "--data.init_args.val_size",
            "2",
            "--data.init_args.batch_size",
            "2",
        ]
    )
    assert code == 0
    assert list(tmp_path.rglob("last.ckpt"))
    assert "validation mse_frame" in capsys.readouterr().out


def test_speed_counts_the_flops(tmp_path, capsys):
    from framecast.cli import main

    out = tmp_path / "speed.json"
    code = main(
        [
            "speed",
            "--config",
            str(CONFIGS / "moving_mnist_predrnn_pp_cpu.yaml"),
            "--steps",
            "1",
            "--warmup",
            "0",
            "--no-inference",
            "--no-reference",
            "--conv-reps",
            "1",
            "--no-progress",
            "--threads",
            "1",
            "--json",
            str(out),
            "--model.hidden",
            "[4, 4]",
            "--data.init_args.batch_size",
            "1",
            "--data.init_args.context_frames",
            "2",
            "--data.init_args.horizon_frames",
            "1",
        ]
    )
    assert code == 0
    flops = json.loads(out.read_text())["flops"]
    assert flops["forward_per_clip"] > 0 and flops["train_per_clip"] > 2 * flops["forward_per_clip"]
    assert "GFLOP per training clip" in capsys.readouterr().err
