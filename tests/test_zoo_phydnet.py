"""PhyDNet (``phydnet``): golden test against the official vincent-leguen/PhyDNet code, the moment loss, options,
shapes, training.

``tests/data/phydnet_golden.torch`` holds a tiny official network (``models/models.py``'s ``EncoderRNN`` built
from the official modules at small widths: its ``state_dict``), its input (``frames (B, T, C, H, W)``, 4 context
+ 3 predicted frames, batch 2) and what the official rollout of ``main.py``'s ``train_on_batch`` returned, once
feeding its own predictions (``free``) and once the truth (``forced``, the official teacher forcing coin up):
``next_frames (B, T-1, C, H, W)``, the official training loss (sum of the per-frame MSEs plus the moment loss)
and the moment loss alone. ``tests/data/README.md`` says how it was made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import moving_square
from framecast.models import PhyDNet, build_model
from framecast.models.phydnet import PhyCell, load_official_state_dict, moment_loss, moment_matrix
from framecast.module import FramePredictionModule

DATA = Path(__file__).parent / "data"
ATOL, RTOL = 2e-6, 1e-5  # outputs in (0, 1); measured difference 0
SMALL = {"hidden": [8, 8], "kernel_size": 3, "features": 8, "phy_channels": 8, "phy_kernel": 3, "downsample": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def case() -> dict:
    return torch.load(DATA / "phydnet_golden.torch", weights_only=True)


def faithful_options(cfg: dict) -> dict:
    return {"channels": cfg["img_channel"], "hidden": cfg["num_hidden"], "kernel_size": cfg["filter_size"],
            "features": cfg["features"], "phy_channels": cfg["phy_channels"], "phy_kernel": cfg["phy_kernel"],
            "downsample": cfg["downsample"]}


def faithful_model(case: dict) -> PhyDNet:
    model = build_model("phydnet", **faithful_options(case["config"]))
    load_official_state_dict(model, case["state_dict"])
    return model.eval()


def clip(batch=2, frames=6, channels=1, size=16, seed=0) -> torch.Tensor:
    return torch.rand(batch, frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def make(seed=0, **options) -> PhyDNet:
    torch.manual_seed(seed)
    return build_model("phydnet", **{**SMALL, **options})


# --- golden ------------------------------------------------------------------------------------------
def test_golden_file_is_small_and_nontrivial(case):
    assert (DATA / "phydnet_golden.torch").stat().st_size < 700_000
    cfg = case["config"]
    assert (cfg["phy_kernel"], cfg["downsample"], cfg["input_length"], cfg["total_length"]) == (7, 4, 4, 7)
    free, forced = case["free"]["next_frames"], case["forced"]["next_frames"]
    assert free.shape == (2, 6, 1, 32, 32)
    assert torch.equal(free[:, :4], forced[:, :4]) and (free[:, 4:] - forced[:, 4:]).abs().max() > 0.1


@pytest.mark.parametrize("kind", ["free", "forced"])
def test_rollout_equals_official(case, kind):
    cfg = case["config"]
    frames, ti = case["frames"], cfg["input_length"]
    horizon = cfg["total_length"] - ti
    model = faithful_model(case)
    # the official coin for the whole horizon: every input the truth, or every horizon input the prediction
    mask = torch.full((2, ti + horizon - 2), 1.0 if kind == "forced" else 0.0)
    mask[:, : ti - 1] = 1.0
    with torch.no_grad():
        roll = model.rollout(frames[:, :ti], horizon, target=frames[:, ti:], teacher_mask=mask)
        plain = model.rollout(frames[:, :ti], horizon)
    want = case[kind]["next_frames"]
    torch.testing.assert_close(roll.frames, want, atol=ATOL, rtol=RTOL)
    if kind == "free":
        torch.testing.assert_close(plain.frames, want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(roll.aux_loss, case[kind]["moment_loss"], atol=1e-6, rtol=1e-6)


def test_training_loss_equals_official(case):
    """The official loss sums the MSEs of the 6 next frames and adds the moment loss: framecast's ``loss: mse,
    loss_frames: all`` (their mean) with ``moment_weight: 1/6`` is it divided by 6."""
    cfg = case["config"]
    opts = faithful_options(cfg)
    module = FramePredictionModule(
        model="phydnet", hidden=opts.pop("hidden"), **{k: opts.pop(k) for k in ("channels", "kernel_size")},
        patch_size=1, model_options={**opts, "moment_weight": 1 / 6}, loss="mse", loss_frames="all")
    load_official_state_dict(module.model, case["state_dict"])
    frames, ti = case["frames"], cfg["input_length"]
    module.teacher_forcing.mask = lambda *args, **kwargs: torch.ones(2, 5)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step({"context": frames[:, :ti], "target": frames[:, ti:]}, 0)
    torch.testing.assert_close(6 * loss, case["forced"]["loss"], atol=1e-5, rtol=1e-6)


def test_framecast_differs_only_in_the_output_layer(case):
    """framecast's parameters are the official ones but the last transposed convolution, which has
    ``hidden[-1]`` outputs instead of the frame's ``C`` (the official one in the first ``C``, zeros elsewhere),
    and the shared head, a 1x1 convolution that copies those ``C`` features."""
    model = faithful_model(case)
    official = case["state_dict"]
    ours = dict(model.named_parameters())
    assert len(ours) == len(official) + 2  # + head.conv.weight, head.conv.bias
    last_w, last_b = model.decoder[2].weight.detach(), model.decoder[2].bias.detach()
    assert last_w.shape == (16, 16, 3, 3) and official["decoder_D.upc3.weight"].shape == (16, 1, 3, 3)
    assert torch.equal(last_w[:, :1], official["decoder_D.upc3.weight"]) and not last_w[:, 1:].any()
    assert torch.equal(last_b[:1], official["decoder_D.upc3.bias"]) and not last_b[1:].any()
    head = model.head.conv.weight.detach().flatten(1)
    assert torch.equal(head, torch.eye(1, 16)) and not model.head.conv.bias.any()
    extra = last_w[:, 1:].numel() + last_b[1:].numel() + head.numel() + 1
    assert sum(v.numel() for v in ours.values()) == sum(v.numel() for v in official.values()) + extra
    # the ConvLSTM gates are reordered (official i, f, o, g; framecast's i, f, g, o)
    w = official["convcell.cell_list.1.conv.weight"]
    assert torch.equal(model.cells[1].conv.weight.detach(), torch.cat([w[:32], w[48:], w[32:48]]))


def test_loader_checks_the_architecture(case):
    opts = faithful_options(case["config"])
    sd = case["state_dict"]
    # OpenSTL's PhyDNet_Model holds the cells and the EncoderRNN (which holds them again) and K2M's buffers
    openstl = {f"model.{k}": v for k, v in sd.items() if k.startswith(("phycell.", "convcell."))}
    openstl |= {f"model.encoder.{k}": v for k, v in sd.items()}
    openstl["model.k2m._M0"] = torch.eye(7)
    model = build_model("phydnet", **opts)
    load_official_state_dict(model, {"state_dict": openstl})  # OpenSTL's method checkpoint, cells twice
    assert torch.equal(model.phycell.gate.weight, sd["phycell.cell_list.0.convgate.weight"])
    for bad, match in (({"patch_size": 2}, "patch_size must be 1"), ({"head": "logistic_mixture"}, "deterministic"),
                       ({"residual": True}, "residual: false"), ({"phy_kernel": 5}, "do not fit"),
                       ({"hidden": [8, 8]}, "do not fit")):
        with pytest.raises(ValueError, match=match):
            load_official_state_dict(build_model("phydnet", **{**opts, **bad}), sd)
    with pytest.raises(ValueError, match="unexpected official weight"):
        load_official_state_dict(build_model("phydnet", **opts), {**sd, "conv_last.weight": torch.zeros(1)})
    with pytest.raises(TypeError):
        load_official_state_dict(build_model("convlstm", hidden=[8, 8]), sd)


# --- the PhyCell and the moment loss -----------------------------------------------------------------
def test_cell_equations():
    """The PhyCell equations of the docstring, written out with the cell's own convolutions, in float64."""
    torch.manual_seed(0)
    cell = PhyCell(4, 3).double()
    g = torch.Generator().manual_seed(1)
    e, h = torch.randn(2, 4, 5, 5, generator=g).double(), torch.randn(2, 4, 5, 5, generator=g).double()
    h_tilde = h + cell.conv2(F.group_norm(cell.conv1(h), 3, cell.norm.weight, cell.norm.bias))
    k = torch.sigmoid(F.conv2d(torch.cat([e, h], 1), cell.gate.weight, cell.gate.bias, padding=1))
    torch.testing.assert_close(cell(e, h), h_tilde + k * (e - h_tilde))
    assert cell.conv1.weight.shape == (9, 4, 3, 3)  # one filter per moment (i, j), i, j < k


def test_moment_matrix_known_answer():
    """``M w M^T`` are the moments ``sum w[x, y] x^i y^j / (i! j!)`` about the centre."""
    m = moment_matrix(3)
    torch.testing.assert_close(m, torch.tensor([[1.0, 1, 1], [-1, 0, 1], [0.5, 0, 0.5]], dtype=torch.float64))
    laplace_x = torch.tensor([[0.0, 1, 0], [0, -2, 0], [0, 1, 0]], dtype=torch.float64)  # d^2/dx^2 along x (rows)
    moments = m @ laplace_x @ m.T
    want = torch.zeros(3, 3, dtype=torch.float64)
    want[2, 0] = 1.0  # second moment along x / 2! = 1, every other moment 0
    torch.testing.assert_close(moments, want)


@pytest.mark.parametrize("k", [3, 7])
def test_moment_loss_is_zero_for_constrained_kernels_and_positive_otherwise(k):
    """Filter ``n = i*k + j`` with moment matrix ``e_ij`` (the kernel ``M^-1 e_ij M^-T``) costs nothing."""
    m_inv = torch.linalg.inv(moment_matrix(k))
    basis = torch.eye(k * k, dtype=torch.float64).view(k * k, k, k)
    kernels = m_inv @ basis @ m_inv.T  # (k*k, k, k)
    weight = kernels[:, None].expand(k * k, 5, k, k).contiguous()
    assert moment_loss(weight).item() == pytest.approx(0.0, abs=1e-12)
    bumped = weight.clone()
    bumped[3, 2] += 0.1 * torch.randn(k, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert moment_loss(bumped).item() > 1e-6
    # known answer: zero kernels miss exactly one moment (value 1) per filter of every channel
    zeros = torch.zeros(k * k, 5, k, k)
    assert moment_loss(zeros).item() == pytest.approx(5 * (k * k) / (k * k) ** 2)


def test_moment_weight_scales_the_aux_loss_and_zero_turns_it_off():
    context = clip(frames=3)
    with torch.no_grad():
        one = make(moment_weight=1.0).rollout(context, 2).aux_loss
        half = make(moment_weight=0.5).rollout(context, 2).aux_loss
        off = make(moment_weight=0.0).rollout(context, 2).aux_loss
    assert one.item() > 0 and off == 0.0
    torch.testing.assert_close(half, one / 2)
    torch.testing.assert_close(one, moment_loss(make().phycell.conv1.weight))


# --- options and shapes ------------------------------------------------------------------------------
def test_options_are_typed_and_checked():
    from framecast.models.registry import model_options

    opts = model_options("phydnet")
    assert opts["features"] == (int, 32) and opts["phy_channels"] == (int, 64) and opts["phy_kernel"] == (int, 7)
    assert opts["downsample"] == (int, 4) and opts["moment_weight"] == (float, 1.0)
    for bad, field in (({"downsample": 8}, "downsample"), ({"downsample": 2.0}, "downsample"),
                       ({"phy_kernel": 4}, "phy_kernel"), ({"features": 0}, "features"),
                       ({"phy_channels": -1}, "phy_channels"), ({"moment_weight": -0.1}, "moment_weight"),
                       ({"moment_weight": "high"}, "moment_weight")):
        with pytest.raises(ValueError, match=f"model.model_options.{field}"):
            build_model("phydnet", **{**SMALL, **bad})


def test_bad_options_through_the_cli_are_one_clear_message(tmp_path, capsys):
    from framecast.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "moving_mnist_phydnet_cpu.yaml"
    code = main(["fit", "--config", str(config), "--model.model_options", '{"downsample": 3}',
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "model.model_options.downsample" in err and "Traceback" not in err


def test_frame_size_must_be_divisible_by_patch_and_downsample():
    model = make(patch_size=2, downsample=4)
    with pytest.raises(ValueError, match=r"patch_size x downsample = 2 x 4"):
        model(clip(size=12), 1)
    assert model(clip(size=24), 1).shape == (2, 1, 1, 24, 24)  # not tied to one frame size


# (channels, size, patch, residual, head, downsample, hidden, context, horizon)
SHAPES = [
    (1, 16, 1, False, "deterministic", 4, [8], 1, 4),
    (3, 16, 2, True, "logistic_mixture", 2, [8, 4], 4, 2),
    (1, 32, 1, True, "deterministic", 2, [6, 8], 3, 1),
    (3, 32, 2, False, "logistic_mixture", 4, [8], 2, 3),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "c{}-{}px-p{}-res{}-{}-ds{}-{}-{}to{}".format(*c))
def test_shapes_any_context_and_horizon(case):
    channels, size, p, residual, head, ds, hidden, t_ctx, horizon = case
    model = make(channels=channels, patch_size=p, residual=residual, head=head, num_mixtures=2, downsample=ds,
                 hidden=hidden)
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


def test_state_shapes():
    model = make(downsample=4, hidden=[8, 6])
    x = torch.rand(2, 1, 16, 16)
    h_phy, layers = model.init_state(2, 16, 16, x)
    assert h_phy.shape == (2, 8, 4, 4) and not h_phy.any() and layers == [None, None]
    with torch.no_grad():
        feat, (h_phy, layers), _ = model.step(x, (h_phy, layers))
    assert feat.shape == (2, 6, 16, 16) and ((feat > 0) & (feat < 1)).all()
    assert [tuple(h.shape) for h, _ in layers] == [(2, 8, 4, 4), (2, 6, 4, 4)] and h_phy.any()


# --- training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["deterministic", "logistic_mixture"])
def test_every_parameter_gets_a_gradient(head):
    model = make(head=head, num_mixtures=2, hidden=[8, 4])
    data = clip(frames=6)
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    roll = model.rollout(data[:, :3], 3, target=data[:, 3:], teacher_mask=mask)
    loss = F.mse_loss(roll.prediction(), data[:, 3:]) + roll.aux_loss
    if roll.params is not None:
        loss = loss + model.head.bits(roll.params, data[:, 1:]).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_teacher_forcing_changes_the_rollout():
    model = make()
    data = clip(frames=6)
    with torch.no_grad():
        free = model.rollout(data[:, :3], 3).frames
        forced = model.rollout(data[:, :3], 3, target=data[:, 3:], teacher_mask=torch.ones(2, 4)).frames
    assert torch.equal(free[:, :3], forced[:, :3]) and not torch.allclose(free[:, 3:], forced[:, 3:])


def test_seeded_determinism():
    context = clip(frames=3)
    with torch.no_grad():
        a, b, c = make(seed=1)(context, 3), make(seed=1)(context, 3), make(seed=2)(context, 3)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def fit(steps: int, size: int = 16, lr: float = 1e-2):
    model = make(moment_weight=0.0)
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


def test_moment_loss_training_pulls_the_filters_to_the_constraint():
    model = make(phy_kernel=3)
    opt = torch.optim.Adam([model.phycell.conv1.weight], lr=0.05)
    start = model.aux_loss().item()
    for _ in range(100):
        opt.zero_grad()
        model.aux_loss().backward()
        opt.step()
    assert model.aux_loss().item() < 0.01 * start
