"""E3D-LSTM (``e3d_lstm``): golden tests against OpenSTL's PyTorch port, options, window, recall, training.

``tests/data/e3d_lstm_golden_*.pt`` hold tiny OpenSTL ``E3DLSTM_Model`` networks (their ``state_dict``), their
inputs (``frames (B, T, H, W, C)``, 4 context + 3 predicted frames, batch 2), the teacher forcing per clip and
step (``mask``: the official patch-space ``mask_true`` is this flag broadcast; scheduled and reverse scheduled
sampling) and what OpenSTL's forward returned, as is (``openstl``) and with framecast's two fixes applied to
it (``fixed``: the memory ``M'`` returned, the recall attention over channels-last positions).
``tests/data/README.md`` says how they were made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import moving_square
from framecast.models import E3DLSTM, build_model
from framecast.models.e3d_lstm import WindowConv3d, load_openstl_state_dict, recall
from framecast.module import FramePredictionModule

DATA = Path(__file__).parent / "data"
CASES = sorted(p.stem for p in DATA.glob("e3d_lstm_golden_*.torch"))
MASKS = ("scheduled", "reverse")
ATOL, RTOL = 2e-6, 1e-5  # outputs O(0.1 .. 0.5); measured differences <= 3e-7
SMALL = {"hidden": [8, 8], "kernel_size": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str) -> dict:
    return torch.load(DATA / f"{name}.torch", weights_only=True)


def faithful_options(cfg: dict) -> dict:
    return {"channels": cfg["img_channel"], "hidden": cfg["num_hidden"], "kernel_size": cfg["filter_size"],
            "patch_size": cfg["patch_size"], "window_length": cfg["window_length"],
            "temporal_kernel": cfg["temporal_kernel"], "layer_norm": bool(cfg["layer_norm"]), "bias": False}


def faithful_model(case: dict) -> E3DLSTM:
    model = build_model("e3d_lstm", **faithful_options(case["config"]))
    load_openstl_state_dict(model, case["state_dict"])
    return model.eval()


def teacher_mask(flags: torch.Tensor, input_length: int, kind: str) -> torch.Tensor:
    """OpenSTL's per-clip flags -> framecast's ``teacher_mask (B, T - 2)``: scheduled sampling flags the
    inputs from ``input_length`` on (the context is always true), reverse scheduled sampling every input."""
    f = flags.float()
    return f if kind == "reverse" else torch.cat([torch.ones(f.shape[0], input_length - 1), f], dim=1)


def frames_of(case: dict) -> torch.Tensor:
    return case["frames"].permute(0, 1, 4, 2, 3)


def rollout(model, case: dict, kind: str):
    cfg = case["config"]
    frames, ti = frames_of(case), cfg["input_length"]
    mask = teacher_mask(case[kind]["mask"], ti, kind)
    with torch.no_grad():
        return model.rollout(frames[:, :ti], cfg["total_length"] - ti, target=frames[:, ti:], teacher_mask=mask)


def expected(case: dict, kind: str, variant: str = "fixed") -> torch.Tensor:
    return case[kind][variant]["next_frames"].permute(0, 1, 4, 2, 3)


def clip(batch=2, frames=6, channels=1, size=16, seed=0) -> torch.Tensor:
    return torch.rand(batch, frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def make(seed=0, **options) -> E3DLSTM:
    torch.manual_seed(seed)
    return build_model("e3d_lstm", **{**SMALL, **options})


# --- golden ------------------------------------------------------------------------------------------
def test_golden_files_are_small_and_complete():
    assert CASES == ["e3d_lstm_golden_p1", "e3d_lstm_golden_p2_rgb_ln", "e3d_lstm_golden_p2_w3"]
    for name in CASES:
        assert (DATA / f"{name}.torch").stat().st_size < 300_000
        case = load(name)
        for kind in MASKS:
            assert 0 < case[kind]["mask"].float().mean() < 1  # the mask mixes truth and predictions
            assert {"fixed", "openstl"} <= set(case[kind])
    cfgs = [load(n)["config"] for n in CASES]
    assert {c["window_length"] for c in cfgs} == {2, 3} and {c["layer_norm"] for c in cfgs} == {0, 1}
    assert {(c["img_channel"], c["patch_size"]) for c in cfgs} >= {(1, 1), (3, 2)}


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", CASES)
def test_rollout_equals_openstl_with_the_fixes(name, kind):
    case = load(name)
    roll = rollout(faithful_model(case), case, kind)
    want = expected(case, kind)
    assert roll.frames.shape == want.shape
    torch.testing.assert_close(roll.frames, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", CASES)
def test_training_loss_equals_openstl(name, kind):
    """OpenSTL's E3D-LSTM loss (MSE + L1 over all next frames) is framecast's ``loss: mse+l1``."""
    case = load(name)
    cfg = case["config"]
    opts = faithful_options(cfg)
    module = FramePredictionModule(
        model="e3d_lstm", hidden=opts.pop("hidden"),
        **{k: opts.pop(k) for k in ("channels", "kernel_size", "patch_size")},
        model_options=opts, loss="mse+l1", loss_frames="all")
    load_openstl_state_dict(module.model, case["state_dict"])
    frames, ti = frames_of(case), cfg["input_length"]
    mask = teacher_mask(case[kind]["mask"], ti, kind)
    module.teacher_forcing.mask = lambda *args, **kwargs: mask
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step({"context": frames[:, :ti], "target": frames[:, ti:]}, 0)
    torch.testing.assert_close(loss, case[kind]["fixed"]["loss"], atol=1e-6, rtol=1e-6)


def openstl_attention(query: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
    """OpenSTL's ``_attn`` on framecast's tensors: it reshapes channels-first ``(B, C, w, H, W)`` to
    ``(B, -1, C)`` as they lie in memory, and its history is the memories concatenated along the channels
    (``(B, n*C, w, H, W)``), i.e. each memory reshaped so, one after the other."""
    b, c, w, h, wd = query.shape
    q = query.reshape(b, -1, c)
    k = torch.cat([m.reshape(b, -1, c) for m in memories.split(w, dim=2)], dim=1)
    attn = torch.softmax(torch.einsum("bxc,byc->bxy", q, k), dim=2)
    return torch.einsum("bxy,byc->bxc", attn, k).reshape(b, c, w, h, wd)


def with_openstl_bugs(model: E3DLSTM, attention: bool = True, memory: bool = True) -> E3DLSTM:
    """framecast with OpenSTL's behaviour put back: its attention, and each cell returning the ``M`` it got."""
    for cell in model.cells:
        if attention:
            cell.recall = openstl_attention
        if memory:
            forward = cell.forward

            def passthrough(x, h, c, m, history, forward=forward):
                h_new, c_new, _ = forward(x, h, c, m, history)
                return h_new, c_new, m

            cell.forward = passthrough
    return model


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("name", CASES)
def test_framecast_differs_from_openstl_only_by_the_two_fixes(name, kind):
    """With OpenSTL's attention reshape and memory passthrough put back, framecast gives OpenSTL's own
    outputs; with either one fixed it does not (each fix changes the rollout)."""
    case = load(name)
    want = expected(case, kind, "openstl")
    got = rollout(with_openstl_bugs(faithful_model(case)), case, kind).frames
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    for attention, memory in ((True, False), (False, True)):
        partly = rollout(with_openstl_bugs(faithful_model(case), attention, memory), case, kind).frames
        assert (partly - want).abs().max() > 1e-3
    assert (expected(case, kind) - want).abs().max() > 1e-2


def test_openstl_memory_never_moves_and_conv_m_gets_no_gradient_there():
    """The memory bug: OpenSTL's ``M`` is zero at every step, so ``conv_m`` (``conv_gm``, no bias) is not
    trained; framecast's ``M`` flows and ``conv_m`` gets a gradient."""
    case = load("e3d_lstm_golden_p1")
    cfg = case["config"]
    frames, ti = frames_of(case), cfg["input_length"]
    for bugged in (True, False):
        model = faithful_model(case).train()
        if bugged:
            with_openstl_bugs(model, attention=False)
        seen: list[torch.Tensor] = []
        hooks = [c.conv_m.register_forward_hook(lambda mod, args, out, seen=seen: seen.append(args[0]))
                 for c in model.cells]
        model.rollout(frames[:, :ti], 2).frames.square().sum().backward()
        for hd in hooks:
            hd.remove()
        moved = any(torch.count_nonzero(m) > 0 for m in seen)
        grad = sum(c.conv_m.conv.weight.grad.abs().sum() for c in model.cells)
        assert moved == (not bugged) and (grad > 0) == (not bugged)


def test_default_layout_differs_only_by_biases():
    """framecast's default ``bias: true`` adds the gate (``conv_x``) and head biases to OpenSTL's network:
    with them zero it gives OpenSTL's (fixed) rollout, and they are its only extra parameters."""
    case = load("e3d_lstm_golden_p1")
    faithful = faithful_model(case)
    opts = faithful_options(case["config"])
    del opts["bias"]
    default = build_model("e3d_lstm", **opts)
    extra = set(default.state_dict()) - set(faithful.state_dict())
    assert extra == {"cells.0.conv_x.conv.bias", "cells.1.conv_x.conv.bias", "head.conv.bias"}
    sd = dict(faithful.state_dict())
    for key in extra:
        sd[key] = torch.zeros_like(default.state_dict()[key])
    default.load_state_dict(sd)
    torch.testing.assert_close(rollout(default.eval(), case, "scheduled").frames, expected(case, "scheduled"),
                               atol=ATOL, rtol=RTOL)


def test_loader_checks_the_architecture_and_layer_norm_affines():
    case = load("e3d_lstm_golden_p2_rgb_ln")
    opts = faithful_options(case["config"])
    load_openstl_state_dict(build_model("e3d_lstm", **opts),
                            {"state_dict": {f"model.{k}": v for k, v in case["state_dict"].items()}})
    for bad, match in (({"bias": True}, "bias must be false"), ({"layer_norm": False}, "layer_norm must be true"),
                       ({"window_length": 3}, "window_length must be 2"), ({"hidden": [12, 16]}, "equal"),
                       ({"temporal_kernel": 1}, "temporal_kernel must be 2"), ({"hidden": [8, 8]}, "C\\*p\\*p"),
                       ({"head": "logistic_mixture"}, "deterministic")):
        with pytest.raises(ValueError, match=match):
            load_openstl_state_dict(build_model("e3d_lstm", **{**opts, **bad}), case["state_dict"])
    sd = dict(case["state_dict"])
    w = sd["cell_list.1._norm_c_t.weight"].clone()
    w[0, 1, 0, 0] += 0.5  # varies over the window: not a per-channel affine
    sd["cell_list.1._norm_c_t.weight"] = w
    with pytest.raises(ValueError, match="varies over"):
        load_openstl_state_dict(build_model("e3d_lstm", **opts), sd)
    with pytest.raises(TypeError):
        load_openstl_state_dict(build_model("convlstm", hidden=[8, 8]), case["state_dict"])


def test_rgb_patch_channels_are_reordered():
    case = load("e3d_lstm_golden_p2_rgb_ln")
    model = faithful_model(case)
    official = case["state_dict"]["cell_list.0.conv_x.0.conv3d.weight"]
    loaded = model.cells[0].conv_x.conv.weight.detach()
    for c in range(3):
        for k in range(4):  # framecast input channel c*4 + k is OpenSTL's k*3 + c
            assert torch.equal(loaded[:, c * 4 + k], official[:, k * 3 + c])
    assert not torch.equal(loaded, official)
    readout = model.readout.weight.detach()
    assert torch.equal(readout[1 * 4 + 2], case["state_dict"]["conv_last.weight"][2 * 3 + 1])
    assert torch.count_nonzero(readout[12:]) == 0


# --- the building blocks -----------------------------------------------------------------------------
@pytest.mark.parametrize("w,kt", [(2, 2), (3, 2), (3, 1), (4, 3)])
def test_window_conv_is_openstl_tf_conv3d(w, kt):
    """Valid in time then nearest-resampled to ``w`` (OpenSTL's ``tf_Conv3d``: ``F.interpolate`` nearest)."""
    torch.manual_seed(0)
    conv = WindowConv3d(3, 5, 3, kt, layer_norm=False, bias=True)
    x = torch.randn(2, 3, w, 6, 6)
    want = F.interpolate(conv.conv(x), size=x.shape[-3:], mode="nearest")
    torch.testing.assert_close(conv(x), want, rtol=0, atol=0)


def test_recall_is_softmax_attention_over_positions():
    g = torch.Generator().manual_seed(0)
    q, mem = torch.randn(2, 4, 2, 3, 3, generator=g), torch.randn(2, 4, 6, 3, 3, generator=g)
    qd, md = q.double(), mem.double()
    qf = qd.permute(0, 2, 3, 4, 1).reshape(2, -1, 4)  # (B, positions, C)
    kf = md.permute(0, 2, 3, 4, 1).reshape(2, -1, 4)
    out = torch.softmax(qf @ kf.transpose(1, 2), dim=-1) @ kf  # no 1/sqrt(C), as the official code
    want = out.reshape(2, 2, 3, 3, 4).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(recall(q, mem).double(), want, rtol=1e-5, atol=1e-6)


# --- options, window, recall -------------------------------------------------------------------------
def test_options_are_typed_and_checked():
    from framecast.models.registry import model_options

    opts = model_options("e3d_lstm")
    assert opts["window_length"] == (int, 2) and opts["temporal_kernel"] == (int, 2)
    assert opts["recall_length"][1] is None and opts["bias"] == (bool, True)
    with pytest.raises(ValueError, match="model.model_options.window_length"):
        build_model("e3d_lstm", window_length="2")
    with pytest.raises(ValueError, match="model.model_options.window_length must be >= 1, got 0"):
        build_model("e3d_lstm", window_length=0, temporal_kernel=1)
    with pytest.raises(ValueError, match="model.model_options.temporal_kernel"):
        build_model("e3d_lstm", window_length=2, temporal_kernel=3)
    with pytest.raises(ValueError, match="model.model_options.recall_length"):
        build_model("e3d_lstm", recall_length=0)


@pytest.mark.parametrize("window", [2, 3])
def test_a_context_shorter_than_the_window_is_a_config_error(window):
    model = make(window_length=window)
    with pytest.raises(ValueError, match=rf"model.model_options.window_length is {window}.*got {window - 1}"):
        model(clip(frames=window - 1), 2)
    assert model(clip(frames=window), 2).shape == (2, 2, 1, 16, 16)  # exactly the window is enough


# (channels, size, patch, residual, head, window, temporal_kernel, context, horizon)
SHAPES = [
    (1, 16, 1, False, "deterministic", 2, 2, 2, 5),
    (3, 16, 2, True, "logistic_mixture", 3, 2, 4, 2),
    (1, 32, 4, True, "deterministic", 3, 3, 3, 1),
    (3, 16, 1, False, "logistic_mixture", 1, 1, 1, 3),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "c{}-{}px-p{}-res{}-{}-w{}k{}-{}to{}".format(*c))
def test_shapes_any_context_and_horizon(case):
    channels, size, p, residual, head, w, kt, t_ctx, horizon = case
    model = make(channels=channels, patch_size=p, residual=residual, head=head, num_mixtures=2,
                 window_length=w, temporal_kernel=kt)
    context = clip(channels=channels, size=size, frames=t_ctx)
    with torch.no_grad():
        roll = model.rollout(context, horizon, return_hidden=True)
        long = model(context, 3 * horizon + 4)
    steps = t_ctx + horizon - 1
    assert roll.frames.shape == (2, steps, channels, size, size)
    assert roll.hidden.shape == (2, steps, 8, size // p, size // p)
    assert long.shape == (2, 3 * horizon + 4, channels, size, size) and torch.isfinite(long).all()
    if head == "logistic_mixture":
        assert roll.params.shape == (2, steps, 3 * 2 * channels, size, size)


def test_the_window_holds_the_last_inputs():
    model = make(window_length=3)
    x = torch.rand(2, 1, 16, 16)
    state = model.init_state(2, 16, 16, x)
    assert state[0].shape == (2, 1, 2, 16, 16) and torch.count_nonzero(state[0]) == 0  # zeros before the start
    frames = [torch.rand(2, 1, 16, 16) for _ in range(4)]
    for f in frames:
        _, state, _ = model.step(f, state)
    assert torch.equal(state[0], torch.stack(frames[-2:], dim=2))


@pytest.mark.parametrize("recall_length", [None, 1, 3])
def test_recall_length_bounds_the_eidetic_memories(recall_length):
    model = make(recall_length=recall_length)
    calls = []
    hook = model.cells[0].register_forward_hook(lambda mod, args, out: calls.append(args[4].shape[2]))
    with torch.no_grad():
        model.rollout(clip(frames=3), 4)
    hook.remove()
    # step t attends over the zero initial memory and those of steps 0..t-1, the last recall_length of them
    want = [2 * (t + 1 if recall_length is None else min(t + 1, recall_length)) for t in range(6)]
    assert calls == want


def test_recall_length_longer_than_the_rollout_is_all():
    context = clip(frames=3)
    with torch.no_grad():
        full = make(seed=3)(context, 3)
        long = make(seed=3, recall_length=5)(context, 3)
        short = make(seed=3, recall_length=1)(context, 3)
    torch.testing.assert_close(long, full, rtol=0, atol=0)
    assert not torch.allclose(short, full)


def test_memory_zigzag_flow():
    model = make(hidden=[8, 8, 8])
    calls = {i: [] for i in range(3)}
    hooks = [c.register_forward_hook(lambda mod, args, out, i=i: calls[i].append((args, out)))
             for i, c in enumerate(model.cells)]
    with torch.no_grad():
        model.rollout(clip(frames=3), 2)
    for hd in hooks:
        hd.remove()
    assert torch.count_nonzero(calls[0][0][0][3]) == 0
    for t in range(4):
        for layer in (1, 2):
            assert calls[layer][t][0][3] is calls[layer - 1][t][1][2]
        if t:
            assert calls[0][t][0][3] is calls[2][t - 1][1][2]


# --- training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["deterministic", "logistic_mixture"])
@pytest.mark.parametrize("options", [{}, {"window_length": 3, "layer_norm": True, "hidden": [8, 4], "recall_length": 2}],
                         ids=["default", "w3-ln-unequal-recall2"])
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


def fit(steps: int, size: int = 16, lr: float = 1e-2, patch_size: int = 1):
    model = make(patch_size=patch_size)
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
    model, data, losses = fit(300, size=32, patch_size=2)  # the recall attention is quadratic in H x W
    assert min(losses[-5:]) <= 0.1 * losses[0], (losses[0], losses[-5:])
    with torch.no_grad():
        free = model(data[:, :3], 3)
    assert F.mse_loss(free, data[:, 3:]) < 0.01


def test_cpu_config_fits_a_few_steps_as_shipped(tmp_path, capsys):
    from framecast.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "moving_mnist_e3d_lstm_cpu.yaml"
    code = main(["fit", "--config", str(config), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                 "--data.init_args.train_size", "4", "--data.init_args.val_size", "2",
                 "--data.init_args.batch_size", "2"])
    assert code == 0 and list(tmp_path.rglob("last.ckpt"))
    assert "validation mse_frame" in capsys.readouterr().out
