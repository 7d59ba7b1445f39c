"""TAU (``tau``): golden tests against OpenSTL (the network and its training loss), the differential divergence.

``tests/data/tau_golden.torch`` holds a tiny OpenSTL ``SimVP_Model(model_type='tau')`` (its ``state_dict``, batch-norm
statistics and layer scales moved away from the initialisation), an input window ``x``, a target ``y``, what the
official code returned in eval mode (``outputs``: the window, a shorter and a longer horizon as OpenSTL's
``SimVP.forward``) and the official training loss of ``openstl/methods/tau.py`` on ``(x, y)``: ``mse``, ``ddr``
(``diff_div_reg``) and ``loss = mse + alpha * ddr``. ``tests/data/README.md`` says how it was made.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import moving_square
from framecast.models import TAU, build_model
from framecast.models.simvp import load_official_state_dict
from framecast.models.tau import differential_divergence
from framecast.module import FramePredictionModule

DATA = Path(__file__).parent / "data"
ATOL, RTOL = 5e-6, 1e-5
SMALL = {"hidden": [8, 16], "kernel_size": 3, "context": 3, "spatial_layers": 2, "temporal_layers": 2,
         "mlp_ratio": 2.0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def case() -> dict:
    return torch.load(DATA / "tau_golden.torch", weights_only=True)


def options(cfg: dict) -> dict:
    return {"channels": cfg["C"], "hidden": [cfg["hid_S"], cfg["hid_T"]], "kernel_size": cfg["spatio_kernel_enc"],
            "patch_size": 1, "context": cfg["T"], "spatial_layers": cfg["N_S"], "temporal_layers": cfg["N_T"],
            "mlp_ratio": cfg["mlp_ratio"], "alpha": cfg["alpha"]}


def test_golden_file_is_small_and_complete(case):
    assert (DATA / "tau_golden.torch").stat().st_size < 300_000
    assert case["config"]["model_type"] == "tau" and case["config"]["alpha"] == 0.1
    assert case["ddr"] > 0 and set(case["outputs"]) == {"window", "short", "long"}


@pytest.mark.parametrize("horizon", ["window", "short", "long"])
def test_prediction_equals_official(case, horizon):
    model = load_official_state_dict(build_model("tau", **options(case["config"])), case["state_dict"]).eval()
    want = case["outputs"][horizon]
    with torch.no_grad():
        got = model(case["x"], want.shape[1])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_training_loss_equals_official(case):
    """OpenSTL's TAU loss ``MSE + alpha * diff_div_reg`` is framecast's ``loss: mse`` plus the model's aux loss."""
    opts = options(case["config"])
    module = FramePredictionModule(model="tau", hidden=opts.pop("hidden"), loss="mse", loss_frames="horizon",
                                   **{k: opts.pop(k) for k in ("channels", "kernel_size", "patch_size")},
                                   model_options=opts)
    load_official_state_dict(module.model, case["state_dict"])
    module.eval()  # the official outputs are eval-mode ones (batch norm on its statistics)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step({"context": case["x"], "target": case["y"]}, 0)
        roll = module.model.rollout(case["x"], case["y"].shape[1], target=case["y"])
    torch.testing.assert_close(roll.aux_loss, case["config"]["alpha"] * case["ddr"], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(loss, case["loss"], atol=1e-6, rtol=1e-5)


def test_differential_divergence_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 1, 3, 3, generator=g, dtype=torch.float64)
    assert differential_divergence(x, x).abs() < 1e-9  # the same motion: no divergence (up to eps)
    assert differential_divergence(x, x + 0.3).abs() < 1e-9  # a constant offset changes no frame difference
    assert differential_divergence(x[:, :2], torch.rand(2, 2, 1, 3, 3, dtype=torch.float64)) == 0  # T <= 2
    # written out: the KL divergence of softmax(true differences / 0.1) from softmax(predicted ones / 0.1)
    y = torch.rand(2, 4, 1, 3, 3, generator=g, dtype=torch.float64)
    total = 0.0
    for b in range(2):
        for t in range(3):
            dp = (x[b, t + 1] - x[b, t]).flatten() / 0.1
            dq = (y[b, t + 1] - y[b, t]).flatten() / 0.1
            p, q = torch.exp(dp) / torch.exp(dp).sum(), torch.exp(dq) / torch.exp(dq).sum()
            total += float((p * torch.log(p / (q + 1e-12) + 1e-12)).sum())
    assert math.isclose(float(differential_divergence(x, y)), total / (2 * 3 * 9), rel_tol=1e-9)


def test_aux_loss_only_with_a_target_and_scaled_by_alpha():
    data = torch.rand(2, 8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = {}
    for alpha in (0.0, 0.1, 0.3):
        torch.manual_seed(0)
        model = build_model("tau", alpha=alpha, **SMALL).eval()
        with torch.no_grad():
            assert model.rollout(data[:, :3], 5).aux_loss == 0
            losses[alpha] = model.rollout(data[:, :3], 5, target=data[:, 3:]).aux_loss
    assert losses[0.0] == 0 and losses[0.1] > 0
    torch.testing.assert_close(losses[0.3], 3 * losses[0.1])


def test_options():
    from framecast.models.registry import model_options

    assert model_options("tau")["alpha"] == (float, 0.1)
    with pytest.raises(ValueError, match="translator"):
        build_model("tau", translator="gsta", **SMALL)
    with pytest.raises(ValueError, match=r"model\.model_options\.alpha"):
        build_model("tau", alpha=-1.0, **SMALL)
    assert isinstance(build_model("tau", **SMALL), TAU)


@pytest.mark.parametrize("head", ["deterministic", "logistic_mixture"])
def test_every_parameter_gets_a_gradient_through_the_loss_and_the_divergence(head):
    torch.manual_seed(0)
    model = build_model("tau", head=head, num_mixtures=2, **SMALL)
    data = torch.rand(2, 7, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    roll = model.rollout(data[:, :3], 4, target=data[:, 3:])
    loss = F.mse_loss(roll.prediction(), data[:, 3:]) + roll.aux_loss
    if roll.params is not None:
        loss = loss + model.head.bits(roll.params, data[:, 3:]).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def fit(steps: int, size: int = 16):
    torch.manual_seed(0)
    model = build_model("tau", **SMALL)
    data = moving_square(size=size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        roll = model.rollout(data[:, :3], 3, target=data[:, 3:])
        loss = F.mse_loss(roll.frames, data[:, 3:]) + roll.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, data, losses


def test_fits_a_clip_quickly():
    _, _, losses = fit(30)
    assert min(losses[-3:]) <= 0.5 * losses[0], losses


@pytest.mark.slow
def test_overfits_a_clip():
    model, data, losses = fit(400, size=32)
    assert min(losses[-5:]) <= 0.05 * losses[0], (losses[0], losses[-5:])
    with torch.no_grad():
        assert F.mse_loss(model(data[:, :3], 3), data[:, 3:]) < 0.01
