"""MAU (``mau``): golden tests against the official ZhengChang467/MAU code, options, attention, training.

``tests/data/mau_golden_*.torch`` hold tiny official networks (``core/models/MAU.py``'s ``RNN``: its
``state_dict``), their inputs (``frames (B, T, H, W, C)``, 5 context + 3 predicted frames, batch 2), the
teacher forcing per clip and horizon step (``mask``: the official patch-space ``mask_true`` is this flag
broadcast; the official code has scheduled sampling only) and what the official forward returned
(``next_frames``, pixels ``(B, T-1, H, W, C)``, and the official training loss, the MSE over all next frames
in patch space). ``tests/data/README.md`` says how they were made.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import moving_square
from framecast.models import MAU, build_model
from framecast.models.mau import MAUCell, load_official_state_dict
from framecast.module import FramePredictionModule

DATA = Path(__file__).parent / "data"
CASES = sorted(p.stem for p in DATA.glob("mau_golden_*.torch"))
ATOL, RTOL = 2e-6, 1e-5  # outputs O(0.2 .. 1.3); measured differences <= 6e-7
SMALL = {"hidden": [8, 8], "kernel_size": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str) -> dict:
    return torch.load(DATA / f"{name}.torch", weights_only=True)


def faithful_options(cfg: dict) -> dict:
    return {"channels": cfg["img_channel"], "hidden": cfg["num_hidden"], "kernel_size": cfg["filter_size"],
            "patch_size": cfg["patch_size"], "tau": cfg["tau"], "cell_mode": cfg["cell_mode"],
            "model_mode": cfg["model_mode"], "sr_size": cfg["sr_size"]}


def faithful_model(case: dict) -> MAU:
    model = build_model("mau", **faithful_options(case["config"]))
    load_official_state_dict(model, case["state_dict"])
    return model.eval()


def teacher_mask(flags: torch.Tensor, input_length: int) -> torch.Tensor:
    """The official scheduled sampling flags (horizon inputs) -> framecast's ``teacher_mask (B, T - 2)``."""
    return torch.cat([torch.ones(flags.shape[0], input_length - 1), flags.float()], dim=1)


def frames_of(case: dict) -> torch.Tensor:
    return case["frames"].permute(0, 1, 4, 2, 3)


def rollout(model, case: dict):
    cfg = case["config"]
    frames, ti = frames_of(case), cfg["input_length"]
    mask = teacher_mask(case["scheduled"]["mask"], ti)
    with torch.no_grad():
        return model.rollout(frames[:, :ti], cfg["total_length"] - ti, target=frames[:, ti:], teacher_mask=mask)


def clip(batch=2, frames=6, channels=1, size=16, seed=0) -> torch.Tensor:
    return torch.rand(batch, frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def make(seed=0, **options) -> MAU:
    torch.manual_seed(seed)
    return build_model("mau", **{**SMALL, **options})


# --- golden ------------------------------------------------------------------------------------------
def test_golden_files_are_small_and_complete():
    assert CASES == ["mau_golden_p1", "mau_golden_p2_rgb_recall"]
    for name in CASES:
        assert (DATA / f"{name}.torch").stat().st_size < 300_000
        assert 0 < load(name)["scheduled"]["mask"].float().mean() < 1
    cfgs = [load(n)["config"] for n in CASES]
    assert {(c["cell_mode"], c["model_mode"]) for c in cfgs} == {("normal", "normal"), ("residual", "recall")}
    assert {c["sr_size"] for c in cfgs} == {2, 4} and {c["img_channel"] for c in cfgs} == {1, 3}


@pytest.mark.parametrize("name", CASES)
def test_rollout_equals_official(name):
    case = load(name)
    roll = rollout(faithful_model(case), case)
    want = case["scheduled"]["next_frames"].permute(0, 1, 4, 2, 3)
    assert roll.frames.shape == want.shape
    torch.testing.assert_close(roll.frames, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", CASES)
def test_training_loss_equals_official(name):
    """The official loss (MSE over all next frames) is framecast's ``loss: mse, loss_frames: all``."""
    case = load(name)
    cfg = case["config"]
    opts = faithful_options(cfg)
    module = FramePredictionModule(
        model="mau", hidden=opts.pop("hidden"), **{k: opts.pop(k) for k in ("channels", "kernel_size", "patch_size")},
        model_options=opts, loss="mse", loss_frames="all")
    load_official_state_dict(module.model, case["state_dict"])
    frames, ti = frames_of(case), cfg["input_length"]
    mask = teacher_mask(case["scheduled"]["mask"], ti)
    module.teacher_forcing.mask = lambda *args, **kwargs: mask
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step({"context": frames[:, :ti], "target": frames[:, ti:]}, 0)
    torch.testing.assert_close(loss, case["scheduled"]["loss"], atol=1e-6, rtol=1e-6)


def test_the_mask_matters():
    case = load("mau_golden_p2_rgb_recall")
    cfg = case["config"]
    frames, ti = frames_of(case), cfg["input_length"]
    with torch.no_grad():
        plain = faithful_model(case).rollout(frames[:, :ti], cfg["total_length"] - ti).frames
    assert (plain - case["scheduled"]["next_frames"].permute(0, 1, 4, 2, 3)).abs().max() > 1e-2


def test_framecast_drops_only_the_unused_official_convolutions():
    """framecast's parameters are the official ones but ``merge`` and ``conv_last_sr`` (never used by the
    official forward), with the layer-norm affines per channel instead of per element."""
    case = load("mau_golden_p2_rgb_recall")
    model = faithful_model(case)
    official = {k: v for k, v in case["state_dict"].items() if not k.startswith(("merge.", "conv_last_sr."))}
    assert set(case["state_dict"]) - set(official) == {"merge.weight", "merge.bias", "conv_last_sr.weight",
                                                       "conv_last_sr.bias"}
    ours = dict(model.named_parameters())
    assert len(ours) == len(official)
    per_element = sum(v.numel() for k, v in official.items() if k.startswith("cell_list.") and ".1." in k)
    per_channel = sum(v.numel() for k, v in ours.items() if k.startswith("cells.") and ".1." in k)
    assert sum(v.numel() for v in ours.values()) == sum(v.numel() for v in official.values()) - per_element + per_channel


def test_rgb_patch_channels_are_reordered():
    case = load("mau_golden_p2_rgb_recall")
    model = faithful_model(case)
    official = case["state_dict"]["encoders.0.encoder_t_conv-1.weight"]
    loaded = model.encoders[0].weight.detach()
    for c in range(3):
        for k in range(4):  # framecast input channel c*4 + k is the official k*3 + c
            assert torch.equal(loaded[:, c * 4 + k], official[:, k * 3 + c])
    assert not torch.equal(loaded, official)
    assert torch.equal(model.head.conv.bias.detach()[1 * 4 + 2], case["state_dict"]["srcnn.0.bias"][2 * 3 + 1])


def test_loader_checks_the_architecture_and_layer_norm_affines():
    case = load("mau_golden_p1")
    opts = faithful_options(case["config"])
    load_official_state_dict(build_model("mau", **opts), {"net_param": case["state_dict"]})  # Model.save
    load_official_state_dict(build_model("mau", **opts), {f"model.{k}": v for k, v in case["state_dict"].items()})
    for bad, match in (({"sr_size": 2}, "sr_size must be 4"), ({"hidden": [4, 8]}, "equal"),
                       ({"head": "logistic_mixture"}, "deterministic")):
        with pytest.raises(ValueError, match=match):
            load_official_state_dict(build_model("mau", **{**opts, **bad}), case["state_dict"])
    sd = dict(case["state_dict"])
    w = sd["cell_list.1.conv_s.1.weight"].clone()
    w[0, 1, 2] += 0.5
    sd["cell_list.1.conv_s.1.weight"] = w
    with pytest.raises(ValueError, match="varies over"):
        load_official_state_dict(build_model("mau", **opts), sd)
    with pytest.raises(TypeError):
        load_official_state_dict(build_model("convlstm", hidden=[8, 8]), case["state_dict"])


# --- the unit ----------------------------------------------------------------------------------------
def test_cell_equations():
    """The MAU equations of the docstring, written out with the cell's own convolutions, in float64."""
    torch.manual_seed(0)
    cell = MAUCell(4, 3, "residual").double()
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(2, 4, 5, 5, generator=g).double(), torch.randn(2, 4, 5, 5, generator=g).double()
    t_att, s_att = torch.randn(3, 2, 4, 5, 5, generator=g).double(), torch.randn(3, 2, 4, 5, 5, generator=g).double()
    s_next = cell.conv_s_next(s)
    a = torch.stack([(s_att[j] * s_next).sum(dim=(1, 2, 3)) for j in range(3)]) / math.sqrt(4 * 5 * 5)
    alpha = torch.exp(a) / torch.exp(a).sum(0)
    t_trend = sum(alpha[j].view(2, 1, 1, 1) * t_att[j] for j in range(3))
    u = torch.sigmoid(cell.conv_t_next(t))
    t_ami = u * t + (1 - u) * t_trend
    t_g, t_t, t_s = cell.conv_t(t_ami).chunk(3, 1)
    s_g, s_t, s_s = cell.conv_s(s).chunk(3, 1)
    t_want = torch.sigmoid(t_g) * t_t + (1 - torch.sigmoid(t_g)) * s_t
    s_want = torch.sigmoid(s_g) * s_s + (1 - torch.sigmoid(s_g)) * t_s + s
    t_new, s_new = cell(t, s, t_att, s_att)
    torch.testing.assert_close(t_new, t_want)
    torch.testing.assert_close(s_new, s_want)


def test_equal_past_spatial_states_attend_uniformly():
    torch.manual_seed(0)
    cell = MAUCell(4, 3)
    t, s = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    t_att = torch.randn(3, 2, 4, 5, 5)
    same = torch.randn(1, 2, 4, 5, 5).expand(3, -1, -1, -1, -1)
    mean = t_att.mean(0, keepdim=True).expand(3, -1, -1, -1, -1)  # uniform weights: the trend is the mean
    torch.testing.assert_close(cell(t, s, t_att, same), cell(t, s, mean, same))


def test_the_state_keeps_the_last_tau_states():
    model = make(tau=2, sr_size=1)
    x = torch.rand(2, 1, 16, 16)
    state = model.init_state(2, 16, 16, x)
    assert state[1][0].shape == (2, 2, 8, 16, 16) and torch.count_nonzero(state[1][0]) == 0
    ts, s_in = [], []
    def record(mod, args, out):
        ts.append(out[0])
        s_in.append(args[1])

    hook = model.cells[1].register_forward_hook(record)
    with torch.no_grad():
        for _ in range(4):
            _, state, _ = model.step(torch.rand(2, 1, 16, 16), state)
    hook.remove()
    assert torch.equal(state[1][1], torch.stack(ts[-2:]))  # layer 1's last two temporal states
    assert torch.equal(state[2][1], torch.stack(s_in[-2:]))  # and the spatial states that entered it


# --- options and shapes ------------------------------------------------------------------------------
def test_options_are_typed_and_checked():
    from framecast.models.registry import model_options

    opts = model_options("mau")
    assert opts["tau"] == (int, 5) and opts["sr_size"] == (int, 4)
    assert opts["cell_mode"][1] == "normal" and opts["model_mode"][1] == "normal"
    with pytest.raises(ValueError, match="model.model_options.cell_mode"):
        build_model("mau", cell_mode="resid")
    with pytest.raises(ValueError, match="model.model_options.model_mode"):
        build_model("mau", model_mode="u-net")
    with pytest.raises(ValueError, match="model.model_options.tau"):
        build_model("mau", tau=0)
    with pytest.raises(ValueError, match="model.model_options.sr_size"):
        build_model("mau", sr_size=3)
    with pytest.raises(ValueError, match="model.model_options.tau"):
        build_model("mau", tau=2.0)


def test_frame_size_must_be_divisible_by_patch_and_sr_size():
    model = make(patch_size=2, sr_size=4)
    with pytest.raises(ValueError, match=r"patch_size x sr_size = 2 x 4"):
        model(clip(size=12), 1)
    assert model(clip(size=24), 1).shape == (2, 1, 1, 24, 24)  # not tied to one frame size


# (channels, size, patch, residual, head, sr_size, tau, cell_mode, model_mode, hidden, context, horizon)
SHAPES = [
    (1, 16, 1, False, "deterministic", 1, 1, "normal", "normal", [8, 8], 1, 4),
    (3, 16, 2, True, "logistic_mixture", 2, 3, "residual", "recall", [8, 4, 6], 4, 2),
    (1, 32, 1, True, "deterministic", 8, 5, "normal", "recall", [6, 8], 3, 1),
    (3, 32, 4, False, "logistic_mixture", 4, 2, "residual", "normal", [8], 2, 3),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "c{}-{}px-p{}-res{}-{}-sr{}-tau{}-{}-{}-{}-{}to{}".format(*c))
def test_shapes_any_context_and_horizon(case):
    channels, size, p, residual, head, sr, tau, cell_mode, model_mode, hidden, t_ctx, horizon = case
    model = make(channels=channels, patch_size=p, residual=residual, head=head, num_mixtures=2, sr_size=sr,
                 tau=tau, cell_mode=cell_mode, model_mode=model_mode, hidden=hidden)
    context = clip(channels=channels, size=size, frames=t_ctx)
    with torch.no_grad():
        roll = model.rollout(context, horizon, return_hidden=True)
        long = model(context, 3 * horizon + 4)
    steps = t_ctx + horizon - 1
    assert roll.frames.shape == (2, steps, channels, size, size)
    assert roll.hidden.shape == (2, steps, hidden[-1], size // p, size // p)
    assert long.shape == (2, 3 * horizon + 4, channels, size, size) and torch.isfinite(long).all()
    if head == "logistic_mixture":
        assert roll.params.shape == (2, steps, 3 * 2 * channels, size, size)


def test_unequal_hidden_projections_exist_only_where_sizes_differ():
    equal = make(hidden=[8, 8], model_mode="recall", sr_size=2)
    assert all(isinstance(m, torch.nn.Identity) for m in equal.s_in) and isinstance(equal.skip_in, torch.nn.Identity)
    unequal = make(hidden=[8, 4, 6], model_mode="recall", sr_size=2)
    assert [type(m).__name__ for m in unequal.s_in] == ["Identity", "Conv2d", "Conv2d"]
    assert unequal.skip_in.weight.shape == (6, 8, 1, 1)


# --- training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["deterministic", "logistic_mixture"])
@pytest.mark.parametrize("options", [{}, {"hidden": [8, 4], "model_mode": "recall", "cell_mode": "residual",
                                          "sr_size": 2, "tau": 2}], ids=["default", "recall-residual-unequal"])
def test_every_parameter_gets_a_gradient(options, head):
    model = make(head=head, num_mixtures=2, **options)
    data = clip(frames=6)
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    roll = model.rollout(data[:, :3], 3, target=data[:, 3:], teacher_mask=mask)
    loss = F.mse_loss(roll.prediction(), data[:, 3:])
    if roll.params is not None:
        loss = loss + model.head.bits(roll.params, data[:, 1:]).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_seeded_determinism():
    context = clip(frames=3)
    with torch.no_grad():
        a, b, c = make(seed=1)(context, 3), make(seed=1)(context, 3), make(seed=2)(context, 3)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def fit(steps: int, size: int = 16, lr: float = 1e-2):
    model = make(sr_size=2)
    data = moving_square(size=size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        roll = model.rollout(data[:, :3], 3, target=data[:, 3:], teacher_mask=torch.ones(1, 4))
        loss = F.mse_loss(roll.frames, data[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, data, losses


def test_fits_a_clip_quickly():
    _, _, losses = fit(25)
    assert min(losses[-3:]) <= 0.5 * losses[0], losses


@pytest.mark.slow
def test_overfits_a_clip():
    model, data, losses = fit(300, size=32)
    assert min(losses[-5:]) <= 0.1 * losses[0], (losses[0], losses[-5:])
    with torch.no_grad():
        free = model(data[:, :3], 3)
    assert F.mse_loss(free, data[:, 3:]) < 0.01


def test_cpu_config_fits_a_few_steps_as_shipped(tmp_path, capsys):
    from framecast.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "moving_mnist_mau_cpu.yaml"
    code = main(["fit", "--config", str(config), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                 "--data.init_args.train_size", "4", "--data.init_args.val_size", "2",
                 "--data.init_args.batch_size", "2"])
    assert code == 0 and list(tmp_path.rglob("last.ckpt"))
    assert "validation mse_frame" in capsys.readouterr().out
