"""SimVP (``simvp``) and the window predictor base: golden tests against OpenSTL, shapes, training, the CLI.

``tests/data/simvp_golden_*.torch`` hold tiny OpenSTL ``SimVP_Model`` networks (``openstl/models/simvp_model.py``:
their ``state_dict``, batch-norm statistics and layer scales moved away from the initialisation), an input
window ``x (B, T, C, H, W)`` and what the official code returned in eval mode for the window (``window``), a
shorter horizon and a longer one (``short``, ``long``: OpenSTL's ``SimVP.forward`` of ``openstl/methods/simvp.py``,
which keeps the first frames or feeds its own windows back). ``tests/data/README.md`` says how they were made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import moving_square
from framecast.errors import ConfigError
from framecast.models import Rollout, SimVP, build_model
from framecast.models.simvp import load_official_state_dict
from framecast.module import FramePredictionModule, compile_predictor

DATA = Path(__file__).parent / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CASES = ["simvp_golden_gsta", "simvp_golden_incepu_rgb"]
ATOL, RTOL = 5e-6, 1e-5  # outputs O(0.1 .. 1); measured differences <= 2e-6
SMALL = {"hidden": [8, 16], "kernel_size": 3, "context": 3, "spatial_layers": 2, "temporal_layers": 2,
         "mlp_ratio": 2.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str) -> dict:
    return torch.load(DATA / f"{name}.torch", weights_only=True)


def official_options(cfg: dict) -> dict:
    kind = "tau" if cfg["model_type"] == "tau" else "simvp"
    opts = {"channels": cfg["C"], "hidden": [cfg["hid_S"], cfg["hid_T"]], "kernel_size": cfg["spatio_kernel_enc"],
            "patch_size": 1, "context": cfg["T"], "spatial_layers": cfg["N_S"], "temporal_layers": cfg["N_T"],
            "mlp_ratio": cfg["mlp_ratio"], "drop": cfg["drop"], "drop_path": cfg["drop_path"]}
    if kind == "simvp":
        opts["translator"] = cfg["model_type"].lower()
    return kind, opts


def official_model(case: dict):
    kind, opts = official_options(case["config"])
    return load_official_state_dict(build_model(kind, **opts), case["state_dict"]).eval()


def clip(batch=2, frames=6, channels=1, size=16, seed=0) -> torch.Tensor:
    return torch.rand(batch, frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def make(seed=0, name="simvp", **options):
    torch.manual_seed(seed)
    return build_model(name, **{**SMALL, **options})


# --- golden ------------------------------------------------------------------------------------------
def test_golden_files_are_small_and_complete():
    for name in CASES:
        assert (DATA / f"{name}.torch").stat().st_size < 300_000
    cfgs = [load(n)["config"] for n in CASES]
    assert {c["model_type"] for c in cfgs} == {"gSTA", "IncepU"} and {c["C"] for c in cfgs} == {1, 3}
    assert {c["N_S"] for c in cfgs} == {2, 4}
    for c in cfgs:
        assert c["long"] > c["T"] and c["long"] % c["T"]  # several windows, the last one cut


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("horizon", ["window", "short", "long"])
def test_prediction_equals_official(name, horizon):
    case = load(name)
    want = case["outputs"][horizon]
    with torch.no_grad():
        got = official_model(case)(case["x"], want.shape[1])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_every_official_weight_is_used_once():
    case = load("simvp_golden_gsta")
    model = official_model(case)
    assert len(model.state_dict()) == len(case["state_dict"])
    assert torch.equal(model.head.conv.weight, case["state_dict"]["dec.readout.weight"])


def test_loader_checks_the_architecture():
    case = load("simvp_golden_gsta")
    kind, opts = official_options(case["config"])
    for bad in ({"head": "logistic_mixture"}, {"residual": True}, {"patch_size": 2}):
        with pytest.raises(ValueError, match="deterministic"):
            load_official_state_dict(build_model(kind, **{**opts, **bad}), case["state_dict"])
    with pytest.raises(RuntimeError):  # another translator: its weights do not fit
        load_official_state_dict(build_model(kind, **{**opts, "translator": "incepu"}), case["state_dict"])
    load_official_state_dict(build_model(kind, **opts), {"state_dict": {f"model.{k}": v for k, v in
                                                                       case["state_dict"].items()}})


# --- the window predictor's rollout ------------------------------------------------------------------
def test_context_of_another_length_is_a_clear_error():
    model = make(context=3)
    with pytest.raises(ConfigError, match=r"model\.model_options\.context.*context=3.*has 4 frames"):
        model(clip(frames=4), 2)
    with pytest.raises(ValueError, match=r"model\.model_options\.context must be an int >= 1"):
        make(context=0)


def test_a_longer_horizon_feeds_the_predicted_windows_back():
    model = make(seed=3).eval()
    context = clip(frames=3)
    with torch.no_grad():
        long = model(context, 8)
        first = model(context, 3)
        second = model(first, 3)
        third = model(second, 3)
        short = model(context, 2)
    torch.testing.assert_close(long, torch.cat([first, second, third[:, :2]], 1))
    torch.testing.assert_close(short, first[:, :2])


def test_teacher_mask_is_ignored_and_the_rollout_predicts_the_horizon():
    model = make(seed=1).eval()
    data = clip(frames=7)
    with torch.no_grad():
        plain = model.rollout(data[:, :3], 4)
        forced = model.rollout(data[:, :3], 4, target=data[:, 3:], teacher_mask=torch.ones(2, 5))
    torch.testing.assert_close(plain.frames, forced.frames)
    assert plain.start == 3 and plain.frames.shape[1] == 4
    assert torch.equal(plain.truth(data[:, :3], data[:, 3:]), data[:, 3:])
    steps = plain.steps()
    assert steps.shape == (2, 6, 1, 16, 16) and steps[:, :2].isnan().all() and torch.equal(steps[:, 2:], plain.frames)
    with pytest.raises(ValueError, match="teacher_mask must be"):
        model.rollout(data[:, :3], 4, target=data[:, 3:], teacher_mask=torch.ones(2, 4))


def test_recurrent_rollouts_keep_their_layout():
    roll = build_model("convlstm", hidden=[4], kernel_size=3).rollout(clip(frames=3), 2)
    data = clip(frames=5)
    assert roll.start == 1 and torch.equal(roll.steps(), roll.frames)
    assert torch.equal(Rollout(frames=data[:, 1:], horizon=2).truth(data[:, :3], data[:, 3:]), data[:, 1:])


# (name, translator, channels, size, patch, spatial_layers, residual, head, context, horizons)
SHAPES = [
    ("simvp", "gsta", 1, 16, 1, 2, False, "deterministic", 3, (1, 3, 7)),
    ("simvp", "incepu", 3, 16, 2, 2, True, "logistic_mixture", 2, (1, 5)),
    ("simvp", "gsta", 3, 32, 2, 4, True, "deterministic", 4, (2, 9)),
    ("tau", None, 1, 32, 1, 4, False, "logistic_mixture", 3, (4, 10)),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "{}-{}-c{}-{}px-p{}-L{}-res{}-{}-ctx{}".format(*c[:9]))
def test_shapes_for_several_horizons_both_heads(case):
    name, translator, channels, size, p, layers, residual, head, t_ctx, horizons = case
    opts = {"translator": translator} if translator else {}
    model = make(name=name, channels=channels, patch_size=p, spatial_layers=layers, residual=residual, head=head,
                 num_mixtures=2, context=t_ctx, **opts)
    context = clip(channels=channels, size=size, frames=t_ctx)
    latent = size // p // 2 ** (layers // 2)
    for horizon in horizons:
        with torch.no_grad():
            roll = model.rollout(context, horizon, return_hidden=True)
        assert roll.frames.shape == (2, horizon, channels, size, size) and torch.isfinite(roll.frames).all()
        assert roll.hidden.shape == (2, t_ctx + horizon - 1, 8, latent, latent)
        if head == "logistic_mixture":
            assert roll.params.shape == (2, horizon, 3 * 2 * channels, size, size)
            assert roll.frames.min() >= 0 and roll.frames.max() <= 1


def test_sampled_rollout_draws_levels_and_feeds_them_back():
    model = make(head="logistic_mixture", num_mixtures=2).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        roll = model.rollout(clip(frames=3), 5, feed="sample", generator=g)
    levels = roll.frames * 255
    assert torch.equal(levels, levels.round())
    with torch.no_grad():
        again = model.rollout(roll.frames[:, :3], 2, feed="mean")
    torch.testing.assert_close(roll.params[:, 3:], again.params)  # window 2 read window 1's draws


def test_options_are_typed_and_checked():
    from framecast.models.registry import model_options

    opts = model_options("simvp")
    assert opts["translator"][1] == "gsta" and opts["context"] == (int, 10) and opts["spatial_layers"] == (int, 4)
    for bad, match in (({"translator": "swin"}, "translator"), ({"spatial_layers": 3}, "spatial_layers"),
                       ({"temporal_layers": 1}, "temporal_layers"), ({"hidden": [8]}, r"model\.hidden"),
                       ({"context": 2.0}, r"model\.model_options\.context")):
        with pytest.raises(ValueError, match=match):
            make(**bad)
    with pytest.raises(ValueError, match=r"divisible by patch_size x 2\^\(spatial_layers/2\)"):
        make(spatial_layers=4, context=3)(clip(frames=3, size=18), 1)


# --- training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["deterministic", "logistic_mixture"])
@pytest.mark.parametrize("translator", ["gsta", "incepu"])
def test_every_parameter_gets_a_gradient(translator, head):
    model = make(translator=translator, head=head, num_mixtures=2, residual=head == "deterministic")
    data = clip(frames=8)
    roll = model.rollout(data[:, :3], 5, target=data[:, 3:])
    loss = F.mse_loss(roll.prediction(), data[:, 3:])
    if roll.params is not None:
        loss = loss + model.head.bits(roll.params, data[:, 3:]).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_module_loss_is_the_horizon_whatever_loss_frames_says():
    data = clip(frames=6)
    batch = {"context": data[:, :3], "target": data[:, 3:]}
    losses = []
    for frames in ("all", "horizon"):
        torch.manual_seed(0)
        module = FramePredictionModule(model="simvp", hidden=[8, 16], kernel_size=3, patch_size=1, loss="mse",
                                       loss_frames=frames, model_options={"context": 3, "spatial_layers": 2,
                                                                          "temporal_layers": 2})
        module.eval()  # batch norm on its statistics: the same prediction twice
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log without a trainer
            losses.append(module.training_step(batch, 0))
            want = F.mse_loss(module.model(batch["context"], 3), batch["target"])
        torch.testing.assert_close(losses[-1], want)
    assert module.evaluation_metrics()[-1] != "bits_per_pixel"


def test_compile_takes_the_window_map(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compiled.append(fn) or fn)
    model = make()
    compile_predictor(model)
    assert [f.__func__ for f in compiled] == [SimVP.predict_window] and "step" not in vars(model)


def fit(steps: int, size: int = 16, lr: float = 3e-3, **options):
    model = make(**options)
    data = moving_square(size=size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(model.rollout(data[:, :3], 3).frames, data[:, 3:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, data, losses


def test_fits_a_clip_quickly():
    _, _, losses = fit(30)
    assert min(losses[-3:]) <= 0.5 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("translator", ["gsta", "incepu"])
def test_overfits_a_clip(translator):
    model, data, losses = fit(400, size=32, translator=translator)
    assert min(losses[-5:]) <= 0.05 * losses[0], (losses[0], losses[-5:])
    model.train()  # (batch norm on the batch, as trained: one clip)
    with torch.no_grad():
        assert F.mse_loss(model(data[:, :3], 3), data[:, 3:]) < 0.01


# --- through the CLI ---------------------------------------------------------------------------------
# (tests/test_configs.py fits every shipped config, the _cpu ones included, a few steps with narrower layers)
def fit_config(config: Path, root: Path, *extra: str) -> int:
    from framecast.cli import main

    return main(["fit", "--config", str(config), *extra, "--trainer.max_steps", "2", "--trainer.limit_val_batches",
                 "1", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
                 "--data.init_args.train_size", "4", "--data.init_args.val_size", "2",
                 "--data.init_args.batch_size", "2"])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A checkpoint of the _cpu config, narrowed to 32x32 frames and [4, 8] channels (trained with 10 context
    frames)."""
    root = tmp_path_factory.mktemp("simvp_cpu")
    code = fit_config(CONFIGS / "moving_mnist_simvp_cpu.yaml", root, "--model.hidden", "[4, 8]",
                      "--data.init_args.canvas", "32")
    return code, root


def test_a_narrowed_cpu_config_fits_and_writes_a_checkpoint(fitted):
    code, root = fitted
    assert code == 0 and list(root.rglob("last.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["simvp", "tau"])
def test_cpu_config_fits_a_few_steps_as_shipped(tmp_path, capsys, name):
    assert fit_config(CONFIGS / f"moving_mnist_{name}_cpu.yaml", tmp_path) == 0
    assert list(tmp_path.rglob("last.ckpt")) and "validation mse_frame" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["benchmark", "validate"])
def test_a_checkpoint_on_data_of_another_context_length_is_a_clear_error(fitted, tmp_path, capsys, command):
    from framecast.cli import main

    ckpt = str(next(fitted[1].rglob("last.ckpt")))
    args = ["--data.init_args.context_frames", "6", "--data.init_args.val_size", "2",
            "--data.init_args.test_size", "2"]
    if command == "benchmark":
        argv = ["benchmark", "--ckpt_path", ckpt, "--out", str(tmp_path), "--no-progress", *args]
    else:
        argv = ["validate", "--config", str(CONFIGS / "moving_mnist_simvp_cpu.yaml"), "--ckpt_path", ckpt, *args,
                "--model.hidden", "[4, 8]", "--data.init_args.canvas", "32", "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.model_options.context" in err and "context=10" in err and "has 6 frames" in err
    assert "Traceback" not in err


def test_hidden_state_view_shows_the_translator(fitted):
    from framecast.loading import load_module
    from framecast.viz import analysis

    module = load_module(str(next(fitted[1].rglob("last.ckpt"))))
    context = clip(frames=10, size=32)
    roll = analysis.rollout(module, context, 4)
    assert roll.frames.shape == (2, 13, 1, 32, 32) and roll.frames[:, :9].isnan().all()
    assert roll.hidden.shape == (2, 13, 4, 8, 8)  # 32x32 frames on 2x2 patches, one 2x downsampling
    assert analysis.inputs_read(roll, context).shape == (2, 13, 1, 32, 32)
    rgb, explained = analysis.pca_rgb(roll.hidden[0])
    assert rgb.shape == (13, 3, 8, 8) and 0 < float(explained.sum()) <= 1 + 1e-6


def test_window_predictor_is_registered_beside_the_recurrent_ones():
    from framecast.models import MODELS, WindowPredictor

    assert issubclass(MODELS["simvp"], WindowPredictor) and MODELS["simvp"] is SimVP
    assert not issubclass(MODELS["convlstm"], WindowPredictor)
