"""Pixel metrics, codelength and LPIPS of framecast.metrics against answers computed by hand."""

import math
import urllib.request

import pytest
import torch

from framecast.codelength import LaplaceFit, laplace_bits
from framecast.evaluation import score
from framecast.metrics import (
    LPIPS,
    METRICS,
    PSNR_MAX_DB,
    MetricAccumulator,
    bits_per_pixel_per_clip,
    laplace_bits_per_clip,
    mixture_bits_per_clip,
    pixel_metrics,
)
from framecast.metrics import mae_frame as mae_frame_per_clip
from framecast.metrics import mse as mse_per_clip
from framecast.metrics import mse_frame as mse_frame_per_clip
from framecast.metrics import perceptual as M
from framecast.metrics import psnr as psnr_per_clip
from framecast.metrics import ssim as ssim_per_clip

PIXEL_METRICS = {name: METRICS[name].fn for name in pixel_metrics()}


def clip(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


def test_known_answers_on_a_2x2_frame():
    target = torch.tensor([[0.5, 0.0], [0.0, 1.0]]).view(1, 1, 1, 2, 2)
    pred = torch.zeros_like(target)
    # squared errors 0.25, 0, 0, 1 -> sum 1.25; absolute 0.5 + 1 = 1.5; per pixel 1.25 / 4
    assert mse_frame_per_clip(pred, target).item() == pytest.approx(1.25)
    assert mae_frame_per_clip(pred, target).item() == pytest.approx(1.5)
    assert mse_per_clip(pred, target).item() == pytest.approx(0.3125)
    assert psnr_per_clip(pred, target).item() == pytest.approx(10 * math.log10(1 / 0.3125), rel=1e-6)


def test_mse_frame_is_mse_times_subpixels():
    pred, target = clip(2, 3, 3, 12, 13, seed=1), clip(2, 3, 3, 12, 13, seed=2)
    assert torch.allclose(mse_frame_per_clip(pred, target), mse_per_clip(pred, target) * 3 * 12 * 13, rtol=1e-6)
    assert mse_frame_per_clip(pred, target).shape == (2, 3)


def test_identical_frames():
    x = clip(2, 4, 1, 16, 16)
    for name in ("mse_frame", "mae_frame", "mse"):
        assert torch.all(PIXEL_METRICS[name](x, x) == 0)
    assert torch.all(psnr_per_clip(x, x) == PSNR_MAX_DB)
    assert torch.allclose(ssim_per_clip(x, x), torch.ones(2, 4), atol=1e-6)


def test_perfect_frames_score_the_capped_psnr():
    """One PSNR convention everywhere: 10 log10(1 / max(mse, 1e-10)), so a perfect frame is 100 dB and an
    average over clips stays finite (copy-last is exact on static frames of real video)."""
    target = clip(3, 2, 1, 8, 8)
    pred = target.clone()
    pred[1:] = 1 - pred[1:]  # clip 0 perfect at both steps, the others not
    values = psnr_per_clip(pred, target)
    assert torch.all(values[0] == PSNR_MAX_DB) and torch.all(values[1:] < PSNR_MAX_DB)
    acc = MetricAccumulator()
    score(acc, pred, target, pixel_metrics())
    expected = values.double().mean(0)
    torch.testing.assert_close(acc.per_step("psnr"), expected, rtol=1e-6, atol=0)
    assert math.isfinite(acc.mean("psnr"))
    tiny = target + 1e-6  # mse 1e-12, below the floor: capped too
    assert torch.all(psnr_per_clip(tiny.clamp(max=1), target) <= PSNR_MAX_DB)


def test_registry_states_every_convention():
    for name, m in METRICS.items():
        assert m.better in ("lower", "higher") and m.definition and m.tables, name
        assert m.needs in ("prediction", "distribution", "lpips"), name
    assert list(METRICS)[:5] == ["mse_frame", "mae_frame", "mse", "psnr", "ssim"]


def test_a_new_metric_is_one_function_and_one_entry():
    from framecast.metrics import register_metric

    @register_metric("max_error_test_only", better="lower", unit="", definition="largest |error| of a frame",
                     tables="none")
    def max_error(pred, target):
        return (pred.clamp(0, 1) - target).abs().amax(dim=(2, 3, 4))

    try:
        target = clip(2, 3, 1, 6, 6)
        acc = MetricAccumulator()
        score(acc, target * 0.5, target, ["max_error_test_only"])
        torch.testing.assert_close(acc.per_step("max_error_test_only").float(), (target * 0.5).amax(dim=(2, 3, 4)).mean(0))
    finally:
        METRICS.pop("max_error_test_only")


def reference_ssim(x, y, size=11, sigma=1.5):
    """Wang et al. 2004 by a naive loop over every 'valid' window, float64, channels averaged."""
    x, y = x.double(), y.double()
    c, h, w = x.shape
    size = min(size, h, w)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g1 = torch.exp(-(r**2) / (2 * sigma**2))
    win = torch.outer(g1, g1)
    win = win / win.sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for ch in range(c):
        for i in range(h - size + 1):
            for j in range(w - size + 1):
                a, b = x[ch, i : i + size, j : j + size], y[ch, i : i + size, j : j + size]
                mx, my = (win * a).sum(), (win * b).sum()
                vx = (win * (a - mx) ** 2).sum()
                vy = (win * (b - my) ** 2).sum()
                cov = (win * (a - mx) * (b - my)).sum()
                vals.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(torch.stack(vals).mean())


@pytest.mark.parametrize("shape", [(2, 14, 13), (1, 8, 9)])
def test_ssim_matches_a_naive_reference(shape):
    target = clip(1, 2, *shape, seed=3)
    pred = (target + 0.2 * (clip(1, 2, *shape, seed=4) - 0.5)).clamp(0, 1)
    got = ssim_per_clip(pred, target)
    for t in range(2):
        assert got[0, t].item() == pytest.approx(reference_ssim(pred[0, t], target[0, t]), abs=1e-5)


def test_per_step_values_average_to_the_mean_over_batches():
    target = clip(7, 5, 1, 12, 12, seed=5)
    pred = clip(7, 5, 1, 12, 12, seed=6)
    acc = MetricAccumulator()
    score(acc, pred[:4], target[:4], pixel_metrics())  # two batches of different sizes
    score(acc, pred[4:], target[4:], pixel_metrics())
    for name, fn in PIXEL_METRICS.items():
        whole = fn(pred, target).double()
        assert torch.allclose(acc.per_step(name), whole.mean(0), rtol=1e-6)
        assert acc.mean(name) == pytest.approx(float(acc.per_step(name).mean()), rel=1e-12)
        assert acc.mean(name) == pytest.approx(float(whole.mean()), rel=1e-6)


def test_predictions_are_clipped():
    target = clip(2, 2, 1, 12, 12, seed=7)
    wild = (clip(2, 2, 1, 12, 12, seed=8) - 0.5) * 4  # in [-2, 2]
    for name, fn in PIXEL_METRICS.items():
        assert torch.equal(fn(wild, target), fn(wild.clamp(0, 1), target)), name
    scales = torch.full((2,), 0.05, dtype=torch.float64)
    assert torch.equal(laplace_bits_per_clip(wild, target, scales), laplace_bits_per_clip(wild.clamp(0, 1), target, scales))


def test_bits_per_pixel_is_the_mean_over_subpixels():
    bits = clip(2, 3, 3, 4, 5) * 8
    assert torch.allclose(bits_per_pixel_per_clip(bits), bits.mean(dim=(2, 3, 4)), rtol=1e-6)
    pred, target = clip(2, 3, 1, 8, 8, seed=1), clip(2, 3, 1, 8, 8, seed=2)
    scales = torch.tensor([0.05, 0.1, 0.2], dtype=torch.float64)
    expect = laplace_bits(pred, target, scales).mean(dim=(2, 3, 4))
    assert torch.allclose(laplace_bits_per_clip(pred, target, scales).double(), expect, rtol=1e-6)
    with pytest.raises(ValueError, match="one Laplace scale per step"):
        laplace_bits_per_clip(pred, target, scales[:2])


def test_mixture_bits_use_the_heads_distribution():
    from framecast.models.heads import LogisticMixtureHead

    head = LogisticMixtureHead(in_features=4, channels=1, patch_size=1, num_mixtures=2)
    params = clip(2, 3, 6, 8, 8, seed=9) - 0.5  # (B, T, 3*K*C, H, W)
    target = clip(2, 3, 1, 8, 8, seed=10)
    got = mixture_bits_per_clip(head, params, target)
    assert got.shape == (2, 3)
    assert torch.allclose(got, head.bits(params, target).mean(dim=(2, 3, 4)), rtol=1e-6)


def test_laplace_fit_feeds_metric():
    target = clip(4, 2, 1, 8, 8, seed=11)
    pred = (target + 0.03 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    fit = LaplaceFit()
    fit.add(pred, target)
    bits = laplace_bits_per_clip(pred, target, fit.scales())
    assert bits.shape == (4, 2) and torch.all(bits > 0) and torch.all(bits < 8)


# --- LPIPS ---------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) any attempt to reach the network."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


def test_lpips_without_local_weights_is_unavailable(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv(M.LPIPS_ENV, raising=False)
    lp = LPIPS()
    assert not lp.available
    assert "not found locally" in lp.reason and "alexnet" in lp.reason
    assert lp.unavailable_for((64, 64)) == lp.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        lp(clip(1, 1, 1, 64, 64), clip(1, 1, 1, 64, 64))
    assert no_network == []


def test_lpips_never_downloads_even_when_the_file_check_is_fooled(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr(M, "lpips_unavailable_reason", lambda: None)  # pretend the files are there
    lp = LPIPS()
    assert not lp.available
    assert "never downloads" in lp.reason
    assert no_network == []  # refused by framecast itself, before any network call


def test_lpips_switched_off(monkeypatch, no_network):
    monkeypatch.setenv(M.LPIPS_ENV, "off")
    assert "switched off" in LPIPS().reason
    assert "switched off" in LPIPS(enabled=True).reason
    monkeypatch.delenv(M.LPIPS_ENV)
    assert "switched off" in LPIPS(enabled=False).reason
    assert no_network == []


def test_lpips_feeds_rgb_frames_in_minus_one_one():
    seen = {}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, a, b):
            seen["a"], seen["b"] = a, b
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    lp = LPIPS(enabled=False)
    lp.net = Net()
    pred, target = clip(2, 3, 1, 32, 32, seed=1) * 1.5, clip(2, 3, 1, 32, 32, seed=2)
    out = lp(pred, target)
    assert out.shape == (2, 3)
    a, b = seen["a"], seen["b"]
    assert a.shape == (6, 3, 32, 32) and torch.equal(a[:, 0], a[:, 2])
    assert a.min() >= -1 and a.max() <= 1 and b.min() >= -1
    assert torch.allclose(b[:, 1], target.flatten(0, 1)[:, 0] * 2 - 1)
    assert lp.unavailable_for((16, 64)) is not None and "smaller" in lp.unavailable_for((16, 64))


@pytest.mark.slow
def test_lpips_with_local_weights(tmp_path, monkeypatch, no_network):
    """With (random) AlexNet weights in a local torch hub cache LPIPS runs, offline."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(M.LPIPS_ENV, raising=False)
    backbone, linear = M.lpips_weight_files()
    if not linear.is_file():
        pytest.skip("torchmetrics ships no LPIPS linear weights here")
    backbone.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    lp = LPIPS()
    assert lp.available, lp.reason
    x = clip(2, 2, 1, 64, 64, seed=1)
    same = lp(x, x)
    other = lp(x, clip(2, 2, 1, 64, 64, seed=2))
    assert same.shape == (2, 2) and torch.all(same.abs() < 1e-6) and torch.all(other > 0)
    assert no_network == []


def test_merged_accumulators_average_over_both():
    a, b, whole = MetricAccumulator(), MetricAccumulator(), MetricAccumulator()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    a.add("mse", x[:1])
    b.add("mse", x[1:])
    b.set_unavailable("lpips", "no weights")
    whole.add("mse", x)
    a.merge(b)
    torch.testing.assert_close(a.per_step("mse"), torch.tensor([3.0, 5.0], dtype=torch.float64))
    assert a.count("mse") == 3 and a.clips == 3 and a.unavailable == {"lpips": "no weights"}
    torch.testing.assert_close(a.per_step("mse"), whole.per_step("mse"))


@pytest.mark.parametrize("name", ["ssim", "ssim_skimage", "ssim_openstl"])
def test_ssim_is_computed_in_float32_under_bf16_autocast(name):
    # the variances are differences of nearly equal moments: in bfloat16 they cancel (a 1 - SSIM loss reached
    # -inf in bf16-mixed training); every SSIM gives its float32 value under autocast too
    from framecast.metrics import metric

    torch.manual_seed(0)
    target = torch.rand(2, 3, 1, 32, 32)
    pred = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    fn = metric(name).fn
    exact = fn(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = fn(pred, target)
    torch.testing.assert_close(under, exact, rtol=0, atol=1e-6)


def test_ssim_loss_is_finite_and_exact_under_bf16_autocast():
    from framecast.losses import FrameLoss

    torch.manual_seed(1)
    target = torch.rand(2, 4, 1, 16, 16)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_()
    loss = FrameLoss("ssim")
    exact, _ = loss(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under, _ = loss(pred, target)
    assert torch.isfinite(under)
    torch.testing.assert_close(under, exact, rtol=0, atol=1e-6)
