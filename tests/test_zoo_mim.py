"""MIM (``mim``): golden tests against OpenSTL's PyTorch port, what framecast fixes in it (the MIM-S cell kept
on the module and detached), the wiring of MIM-N and MIM-S, the loader's checks, and the shipped configs.

``tests/data/mim_golden_*.torch`` hold tiny OpenSTL ``MIM_Model`` networks (an ST-LSTM and 2 MIM blocks of 4
channels, filter 3, 16x16 frames, 4 context + 3 predicted frames) with random weights (peepholes and layer
norm affines random per channel), their inputs, per-clip teacher forcing masks (OpenSTL's patch-space
layout) and what OpenSTL's forward returned, computed in float64 from float32 weights and frames;
``mim_golden_p2`` also holds OpenSTL's rollout after a call on another clip and the gradients of the loss
with respect to the frames with and without OpenSTL's detach, ``mim_golden_p2_layernorm`` OpenSTL's rollout
with MIM-N's first result kept. ``tests/data/README.md`` says how they were made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from framecast.models import MIM, build_model
from framecast.models.mim import MIMBlock, PeepholeLSTMCell, load_openstl_state_dict

DATA = Path(__file__).parent / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CASES = ["p1", "p2", "p2_rgb", "p2_layernorm"]
MASKS = ("scheduled", "reverse")
# float64: the same function, only rounding (measured <= 3e-14); float32 against the float64 reference
# (measured <= 1e-5)
TOL64 = {"atol": 1e-10, "rtol": 1e-10}
TOL32 = {"atol": 1e-4, "rtol": 1e-3}


pytestmark = pytest.mark.usefixtures("one_thread")


def load(tag: str) -> dict:
    return torch.load(DATA / f"mim_golden_{tag}.torch", weights_only=True)


def faithful_options(cfg: dict) -> dict:
    return {
        "channels": cfg["img_channel"],
        "hidden": cfg["num_hidden"],
        "kernel_size": cfg["filter_size"],
        "patch_size": cfg["patch_size"],
        "layer_norm": bool(cfg["layer_norm"]),
        "bias": False,
    }


def faithful_model(case: dict, dtype=torch.float64) -> MIM:
    model = build_model("mim", **faithful_options(case["config"]))
    load_openstl_state_dict(model, case["state_dict"])
    return model.to(dtype).eval()


def teacher_mask(case: dict, kind: str) -> torch.Tensor:
    """OpenSTL's ``mask_true (B, S, H/p, W/p, p*p*C)`` -> framecast's ``teacher_mask (B, T - 2)`` (see
    tests/test_zoo_predrnn_pp.py)."""
    per = case[kind]["mask"].flatten(2)
    assert (per == per[..., :1]).all()
    per = per[..., 0].float()
    if kind == "reverse":
        return per
    return torch.cat([torch.ones(per.shape[0], case["config"]["input_length"] - 1), per], dim=1)


def frames_of(case: dict, dtype=torch.float64) -> torch.Tensor:
    return case["frames"].permute(0, 1, 4, 2, 3).to(dtype)  # official (B, T, H, W, C) -> (B, T, C, H, W)


def rollout(model, case: dict, kind: str, dtype=torch.float64, frames=None):
    cfg = case["config"]
    frames = frames_of(case, dtype) if frames is None else frames
    ti = cfg["input_length"]
    return model.rollout(
        frames[:, :ti],
        cfg["total_length"] - ti,
        target=frames[:, ti:],
        teacher_mask=teacher_mask(case, kind).to(dtype),
    )


def official(case: dict, kind: str, key: str = "next_frames") -> torch.Tensor:
    return case[kind][key].permute(0, 1, 4, 2, 3)


# --- golden -----------------------------------------------------------------------------------------------
def test_golden_files_are_small_and_complete():
    assert sorted(p.name for p in DATA.glob("mim_golden_*.torch")) == sorted(
        f"mim_golden_{t}.torch" for t in CASES
    )
    for tag in CASES:
        assert (DATA / f"mim_golden_{tag}.torch").stat().st_size < 250_000
        case = load(tag)
        assert case["config"]["model"] == "mim" and len(case["config"]["num_hidden"]) == 3
        for kind in MASKS:
            assert 0 < case[kind]["mask"].flatten(2)[..., 0].float().mean() < 1
            assert case[kind]["next_frames"].dtype == torch.float64
            assert case[kind]["next_frames"].abs().mean() > 0.1
        # the peepholes OpenSTL starts at zero are random here (per channel), so the golden exercises them
        assert case["state_dict"]["stlstm_layer.1.ct_weight"].abs().min() > 0


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("tag", ["p1", "p2", "p2_rgb"])
def test_rollout_equals_openstl(tag, kind):
    case = load(tag)
    with torch.no_grad():
        roll = rollout(faithful_model(case), case, kind)
        roll32 = rollout(faithful_model(case, torch.float32), case, kind, torch.float32)
    assert roll.frames.shape == official(case, kind).shape
    torch.testing.assert_close(roll.frames, official(case, kind), **TOL64)
    torch.testing.assert_close(F.mse_loss(roll.frames, frames_of(case)[:, 1:]), case[kind]["loss"], **TOL64)
    torch.testing.assert_close(roll32.frames, official(case, kind).float(), **TOL32)


@pytest.mark.parametrize("kind", MASKS)
def test_layer_norm_differs_only_by_mim_n_at_the_first_step(kind):
    """With the layer norm MIM-N's response to a zero input is not zero (the norm's shift): framecast keeps
    its first step's result, OpenSTL discards it. framecast equals OpenSTL with that one line changed
    (MIM-N's result at t = 0 kept), and differs from OpenSTL as is."""
    case = load("p2_layernorm")
    with torch.no_grad():
        roll = rollout(faithful_model(case), case, kind)
        roll32 = rollout(faithful_model(case, torch.float32), case, kind, torch.float32)
    kept = official(case, kind, "next_frames_t0_kept")
    torch.testing.assert_close(roll.frames, kept, **TOL64)
    torch.testing.assert_close(
        F.mse_loss(roll.frames, frames_of(case)[:, 1:]), case[kind]["loss_t0_kept"], **TOL64
    )
    torch.testing.assert_close(roll32.frames, kept.float(), **TOL32)
    assert (roll.frames - official(case, kind)).abs().max() > 0.1


def test_no_state_leaks_from_one_rollout_into_the_next():
    """OpenSTL keeps MIM-S's cell on the module: a second call starts from the first call's last cell. Its
    rollout after a call on another clip differs from a fresh one; framecast's is the fresh one every time."""
    case = load("p2")
    model = faithful_model(case)
    fresh = official(case, "scheduled")
    leaked = official(case, "scheduled", "next_frames_after_another_clip")
    assert (leaked - fresh).abs().max() > 1e-2
    with torch.no_grad():
        rollout(model, case, "reverse", frames=torch.rand_like(frames_of(case)))  # another clip first
        torch.testing.assert_close(rollout(model, case, "scheduled").frames, fresh, **TOL64)


def test_gradients_equal_openstl_without_its_detach():
    """OpenSTL detaches MIM-S's cell at every step. The gradient of the training loss with respect to the
    frames equals OpenSTL's with that ``.detach()`` removed (and nothing else changed), not OpenSTL's as is."""
    case = load("p2")
    model = faithful_model(case).train()
    frames = frames_of(case).requires_grad_(True)
    roll = rollout(model, case, "scheduled", frames=frames)
    torch.testing.assert_close(roll.frames.detach(), official(case, "scheduled"), **TOL64)
    (grad,) = torch.autograd.grad(F.mse_loss(roll.frames, frames[:, 1:]), frames)
    without = official(case, "scheduled", "input_grad_without_detach")
    torch.testing.assert_close(grad, without, **TOL64)
    detached = official(case, "scheduled", "input_grad")
    assert (detached - without).abs().max() > 1e-3 * without.abs().max()


@pytest.mark.parametrize("kind", MASKS)
def test_default_layout_differs_only_by_biases(kind):
    case = load("p2")
    faithful = faithful_model(case)
    opts = faithful_options(case["config"])
    del opts["bias"]
    default = build_model("mim", **opts).double()
    extra = set(default.state_dict()) - set(faithful.state_dict())
    assert extra == (
        {f"cells.{i}.conv_x.bias" for i in range(3)}
        | {f"cells.{i}.stationary.conv_x.bias" for i in (1, 2)}
        | {f"nonstationary.{i}.conv_x.bias" for i in (0, 1)}
        | {"head.conv.bias"}
    )
    assert set(faithful.state_dict()) <= set(default.state_dict())
    sd = dict(faithful.state_dict())
    for key in extra:
        sd[key] = torch.zeros_like(default.state_dict()[key])
    default.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(rollout(default.eval(), case, kind).frames, official(case, kind), **TOL64)


def test_rgb_patch_channels_are_reordered():
    case = load("p2_rgb")
    model = faithful_model(case)
    off = case["state_dict"]["stlstm_layer.0.conv_x.0.weight"]
    loaded = model.cells[0].conv_x.weight.detach().float()
    assert not torch.equal(loaded, off)
    for c in range(3):
        for k in range(4):
            assert torch.equal(loaded[:, c * 4 + k], off[:, k * 3 + c])


def test_loader_skips_only_openstls_unused_mimn_conv_last_and_checks_the_architecture():
    case = load("p1")
    sd = case["state_dict"]
    unused = {k for k in sd if k.startswith("stlstm_layer_diff.") and ".conv_last." in k}
    assert unused == {"stlstm_layer_diff.0.conv_last.weight", "stlstm_layer_diff.1.conv_last.weight"}
    opts = faithful_options(case["config"])
    model = build_model("mim", **opts)
    # everything else is loaded; a per-element peephole (2C, H, W) becomes one value per channel
    spatial = {k for k in sd if k.endswith(("ct_weight", "oc_weight"))}
    loaded = sum(v.numel() for k, v in sd.items() if k not in unused | spatial)
    loaded += sum(sd[k].shape[0] for k in spatial)
    assert loaded == sum(p.numel() for p in model.parameters())
    load_openstl_state_dict(model, {"state_dict": {f"model.{k}": v for k, v in sd.items()}})  # a checkpoint
    with pytest.raises(ValueError, match="bias must be false"):
        load_openstl_state_dict(build_model("mim", **{**opts, "bias": True}), sd)
    with pytest.raises(ValueError, match="layer_norm must be false"):
        load_openstl_state_dict(build_model("mim", **{**opts, "layer_norm": True}), sd)
    with pytest.raises(ValueError, match="layer_norm must be true"):
        load_openstl_state_dict(build_model("mim", **opts), load("p2_layernorm")["state_dict"])
    with pytest.raises(ValueError, match="hidden sizes must be equal"):
        load_openstl_state_dict(build_model("mim", **{**opts, "hidden": [4, 4, 8]}), sd)
    with pytest.raises(ValueError, match="unexpected weight"):
        load_openstl_state_dict(model, {**sd, "extra.weight": torch.zeros(1)})
    with pytest.raises(TypeError):
        load_openstl_state_dict(build_model("predrnn", hidden=[4, 4], kernel_size=3), sd)


@pytest.mark.parametrize(
    "key", ["stlstm_layer.2.ct_weight", "stlstm_layer_diff.0.oc_weight", "stlstm_layer.1.conv_s_cc.1.bias"]
)
def test_peepholes_and_layer_norm_need_one_value_per_channel(key):
    """OpenSTL's per-element peepholes and LayerNorm affines map onto framecast's per-channel ones only when
    they are the same over space (OpenSTL's initial zeros and ones are); else the loader raises."""
    case = load("p2_layernorm")
    sd = dict(case["state_dict"])
    w = sd[key].clone()
    w[0, 1, 2] += 0.5
    sd[key] = w
    with pytest.raises(ValueError, match="varies over space"):
        load_openstl_state_dict(build_model("mim", **faithful_options(case["config"])), sd)


# --- the architecture -------------------------------------------------------------------------------------
def test_needs_two_layers_and_typed_options():
    from framecast.models.registry import model_options

    with pytest.raises(ValueError, match="model.hidden.*at least 2 layers"):
        build_model("mim", hidden=[8])
    assert model_options("mim")["bias"] == (bool, True)
    assert model_options("mim")["layer_norm"] == (bool, False)
    with pytest.raises(ValueError, match="model.model_options.bias"):
        build_model("mim", bias=1)


def test_peephole_cell_known_answer():
    """The MIM-N / MIM-S equations on a 1x1 cell with random weights, peepholes included."""
    torch.manual_seed(0)
    cell = PeepholeLSTMCell(2, 3, kernel_size=1)
    with torch.no_grad():
        cell.peephole_c.normal_()
        cell.peephole_o.normal_()
    g = torch.Generator().manual_seed(1)
    x, h, c = (
        torch.randn(2, 2, 4, 4, generator=g),
        torch.randn(2, 3, 4, 4, generator=g),
        torch.randn(2, 3, 4, 4, generator=g),
    )

    def conv(w, v):
        return torch.einsum("oi,bihw->bohw", w.detach()[..., 0, 0], v)

    pre = (
        conv(cell.conv_x.weight, x)
        + cell.conv_x.bias.detach().view(1, -1, 1, 1)
        + conv(cell.conv_h.weight, h)
    )
    i_, g_, f_, o_ = pre.chunk(4, 1)  # i, g, f, o
    wc, wo = cell.peephole_c.detach(), cell.peephole_o.detach()
    i = torch.sigmoid(i_ + wc[:3] * c)
    f = torch.sigmoid(f_ + wc[3:] * c + 1.0)
    c_new = f * c + i * torch.tanh(g_)
    h_new = torch.sigmoid(o_ + wo * c_new) * torch.tanh(c_new)
    out_h, out_c = cell(x, h, c)
    torch.testing.assert_close(out_c, c_new)
    torch.testing.assert_close(out_h, h_new)


def test_mim_block_replaces_the_forget_gate_by_mim_s():
    """c' = MIM-S(D, c, s).h + i * g: with MIM-S's output zero (its output gate shut), c' is i * g alone."""
    torch.manual_seed(0)
    block = MIMBlock(4, 4, kernel_size=3)
    with torch.no_grad():
        block.stationary.conv_x.bias[12:] = -1e4  # o of MIM-S -> 0
    args = [torch.rand(2, 4, 6, 6) for _ in range(6)]  # x, d, h, c, m, s
    _, c, _, s = block(*args)
    i_x, g_x, _, _ = block.conv_x(args[0]).chunk(4, 1)
    i_t, g_t, _ = block.conv_t(args[2]).chunk(3, 1)
    torch.testing.assert_close(c, torch.sigmoid(i_x + i_t) * torch.tanh(g_x + g_t))
    _, s_ref = block.stationary(args[1], args[3], args[5])
    torch.testing.assert_close(s, s_ref)


def test_mim_n_reads_the_differences_and_the_memory_zigzags():
    torch.manual_seed(0)
    model = MIM(channels=1, hidden=[8, 6, 4], kernel_size=3)
    cells = {i: [] for i in range(3)}
    diffs = {i: [] for i in range(2)}
    hooks = [
        c.register_forward_hook(lambda mod, args, out, i=i: cells[i].append((args, out)))
        for i, c in enumerate(model.cells)
    ]
    hooks += [
        n.register_forward_hook(lambda mod, args, out, i=i: diffs[i].append((args, out)))
        for i, n in enumerate(model.nonstationary)
    ]
    with torch.no_grad():
        model.rollout(torch.rand(2, 3, 1, 16, 16), 2)
    for hk in hooks:
        hk.remove()
    steps = 4
    assert all(len(v) == steps for v in [*cells.values(), *diffs.values()])
    assert torch.count_nonzero(diffs[0][0][0][0]) == 0  # no difference at the first step
    for t in range(steps):
        h0 = cells[0][t][1][0]
        if t > 0:  # MIM-N 0 reads H^0_t - H^0_{t-1}
            torch.testing.assert_close(diffs[0][t][0][0], h0 - cells[0][t - 1][1][0], rtol=0, atol=0)
            for i in range(2):  # MIM-N's own state carries over
                assert (
                    diffs[i][t][0][1] is diffs[i][t - 1][1][0] and diffs[i][t][0][2] is diffs[i][t - 1][1][1]
                )
            assert torch.count_nonzero(model.m_in[0](cells[2][t - 1][1][2]) - cells[0][t][0][3]) == 0
        assert diffs[1][t][0][0] is diffs[0][t][1][0]  # MIM-N 1 reads D^1_t
        for layer in (1, 2):
            args = cells[layer][t][0]
            assert args[0] is cells[layer - 1][t][1][0]  # x = H^{l-1}_t
            assert args[1] is diffs[layer - 1][t][1][0]  # d = D^l_t
    # unequal sizes: M goes through a 1x1 convolution into a layer of another size
    assert [type(m).__name__ for m in model.m_in] == ["Conv2d", "Conv2d", "Conv2d"]
    assert all(isinstance(m, torch.nn.Identity) for m in MIM(hidden=[4, 4], kernel_size=3).m_in)


# --- configs ----------------------------------------------------------------------------------------------
def test_configs_are_openstls_setting_and_a_cpu_variant():
    text = (CONFIGS / "moving_mnist_mim.yaml").read_text()
    assert "OpenSTL configs/mmnist/MIM.py" in text
    lit = yaml.safe_load(text)
    m = lit["model"]
    assert (m["model"], m["hidden"], m["kernel_size"], m["patch_size"], m["lr"]) == (
        "mim",
        [128] * 4,
        5,
        4,
        5e-4,
    )
    assert m["teacher_forcing"] == "scheduled_sampling" and lit["data"]["init_args"]["batch_size"] == 16
    assert lit["trainer"]["max_steps"] == 200 * 10000 // 16  # 200 epochs
    cpu = yaml.safe_load((CONFIGS / "moving_mnist_mim_cpu.yaml").read_text())
    assert cpu["model"]["model"] == "mim" and cpu["model"]["hidden"] == [32, 32]


def test_cpu_config_fits_a_few_steps(tmp_path, capsys):
    from framecast.cli import main

    code = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "moving_mnist_mim_cpu.yaml"),
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
            str(CONFIGS / "moving_mnist_mim_cpu.yaml"),
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
    assert code == 0, capsys.readouterr().err[-2000:]
    flops = json.loads(out.read_text())["flops"]
    assert flops["forward_per_clip"] > 0 and flops["train_per_clip"] > 2 * flops["forward_per_clip"]
    assert "GFLOP per training clip" in capsys.readouterr().err
