"""The discretized Laplace codelength and its maximum-likelihood scale against brute force, and the fit of
the scales of deterministic candidates (:mod:`framecast.evaluation.laplace`), on one process or several."""

import math

import pytest
import torch

from framecast.codelength import (
    MIN_SCALE,
    LaplaceFit,
    laplace_bits,
    laplace_log_prob,
    laplace_probabilities,
)
from framecast.metrics import laplace_bits_per_clip
from framecast.models import CopyLast


def laplace_cdf(z: float, b: float) -> float:
    return 0.5 * math.exp(z / b) if z < 0 else 1 - 0.5 * math.exp(-z / b)


def brute_force_probability(k: int, mu: float, b: float) -> float:
    """P(level k) = F(k/255 + 1/510) - F(k/255 - 1/510), end bins open to -inf / +inf (plain float64)."""
    x = k / 255
    upper = 1.0 if k == 255 else laplace_cdf(x + 0.5 / 255 - mu, b)
    lower = 0.0 if k == 0 else laplace_cdf(x - 0.5 / 255 - mu, b)
    return upper - lower


@pytest.mark.parametrize("mu,b", [(0.3, 0.05), (0.0, 0.01), (1.0, 0.2), (0.5, 3.0), (0.7, 0.002), (0.123, 1e-4)])
def test_probabilities_sum_to_one_and_match_brute_force(mu, b):
    p = laplace_probabilities(mu, b)
    assert p.shape == (256,)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    brute = torch.tensor([brute_force_probability(k, mu, b) for k in range(256)], dtype=torch.float64)
    assert math.fsum(brute.tolist()) == pytest.approx(1.0, abs=1e-12)
    big = brute > 1e-6  # where the plain subtraction is itself accurate to 1e-10
    assert torch.allclose(p[big], brute[big], rtol=1e-9)
    levels = torch.arange(256, dtype=torch.float64)[big] / 255
    bits = laplace_bits(torch.full_like(levels, mu).view(1, 1, 1, 1, -1), levels.view(1, 1, 1, 1, -1), b)
    assert torch.allclose(bits.flatten(), -torch.log2(brute[big]), rtol=1e-9, atol=1e-12)


def test_values_snap_to_the_levels_and_predictions_clip():
    mu, b = torch.tensor(0.4), 0.05
    x = torch.tensor(100 / 255)
    assert torch.equal(laplace_log_prob(x + 0.001, mu, b), laplace_log_prob(x, mu, b))
    assert torch.equal(laplace_log_prob(x, torch.tensor(1.7), b), laplace_log_prob(x, torch.tensor(1.0), b))
    assert torch.isfinite(laplace_log_prob(torch.tensor(1.0), torch.tensor(0.0), MIN_SCALE))  # no log 0


def noisy(target, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (target + sigma * torch.randn(target.shape, generator=g)).clamp(0, 1)


def test_a_perfect_prediction_costs_fewer_bits_than_a_noisy_one():
    target = torch.randint(0, 256, (4, 3, 1, 16, 16), generator=torch.Generator().manual_seed(0)) / 255
    val = torch.randint(0, 256, (4, 3, 1, 16, 16), generator=torch.Generator().manual_seed(1)) / 255
    perfect, rough = LaplaceFit(), LaplaceFit()
    perfect.add(val, val)
    rough.add(noisy(val, 0.1), val)
    assert torch.all(perfect.scales() == MIN_SCALE)  # clamped: the MLE of a perfect fit is b -> 0
    b_perfect = laplace_bits_per_clip(target, target, perfect.scales())
    b_rough = laplace_bits_per_clip(noisy(target, 0.1, seed=2), target, rough.scales())
    assert torch.all(b_perfect < 1e-6) and torch.all(b_rough > 1)


def test_copy_last_on_a_static_video_costs_fewer_bits_than_on_a_moving_one():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 1, 24, 24, generator=g)
    static = image.expand(2, 8, 1, 24, 24)  # (B, T, C, H, W): nothing moves
    moving = torch.cat([torch.roll(image, shifts=t, dims=-1) for t in range(8)], dim=1).expand(2, -1, -1, -1, -1)

    def bits(video):
        context, target = video[:, :4], video[:, 4:]
        pred = CopyLast()(context, 4)
        fit = LaplaceFit()
        fit.add(pred, target)  # fitted on the same kind of clips
        return laplace_bits_per_clip(pred, target, fit.scales()).mean()

    assert bits(static) < bits(moving)
    assert bits(moving) > 1


def test_fitted_scale_is_the_maximum_likelihood():
    target = torch.rand(3, 2, 2, 10, 10, generator=torch.Generator().manual_seed(3))
    target[:, :, :, :3] = 0  # end levels, with predictions on both sides of their bin edge
    target[:, :, :, -2:] = 1
    pred = noisy(target, 0.02, seed=4)
    pred[:, 1] = noisy(target[:, 1], 0.2, seed=5)
    fit = LaplaceFit()
    fit.add(pred[:1], target[:1])  # in two batches
    fit.add(pred[1:], target[1:])
    scales = fit.scales()
    assert scales[0] < scales[1]

    def brute_ll(step, b):
        return float(laplace_log_prob(target[:, step], pred[:, step], b).sum())

    for step in range(2):
        b = float(scales[step])
        for factor in (0.5, 0.9, 0.999, 1.001, 1.1, 2.0):  # the exact likelihood is lower on both sides
            assert brute_ll(step, b * factor) < brute_ll(step, b)
        for s in (b, 0.001, 0.3):  # the sufficient statistics give the exact likelihood
            assert fit.log_likelihood(step, s) == pytest.approx(brute_ll(step, s), rel=1e-10)
    one = LaplaceFit()
    one.add(pred, target)
    assert torch.allclose(one.scales(), scales, rtol=1e-8)


def test_discretized_mle_differs_from_the_mean_absolute_error():
    """With residuals around a level the continuous MLE (the MAE) is not the discretized one."""
    target = torch.full((1, 1, 1, 1, 200), 128 / 255)
    pred = target + (torch.rand(1, 1, 1, 1, 200, generator=torch.Generator().manual_seed(0)) - 0.5) / 255
    fit = LaplaceFit()
    fit.add(pred, target)
    mae = float((pred - target).abs().mean())
    b = float(fit.scales()[0])
    assert b != pytest.approx(mae, rel=0.05)
    assert fit.log_likelihood(0, b) > fit.log_likelihood(0, mae)


def test_fit_needs_data_and_consistent_shapes():
    with pytest.raises(ValueError, match="no data"):
        LaplaceFit().scales()
    fit = LaplaceFit()
    fit.add(torch.rand(1, 2, 1, 4, 4), torch.rand(1, 2, 1, 4, 4))
    with pytest.raises(ValueError, match="steps"):
        fit.add(torch.rand(1, 3, 1, 4, 4), torch.rand(1, 3, 1, 4, 4))


def test_merging_fits_of_two_halves_gives_the_fit_of_the_whole():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 256, (6, 2, 1, 8, 8), generator=g).float() / 255
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    whole, a, b = LaplaceFit(), LaplaceFit(), LaplaceFit()
    whole.add(pred, target)
    a.add(pred[:4], target[:4])
    b.add(pred[4:], target[4:])
    empty = LaplaceFit()
    empty.merge(a)  # an empty fit (a process that got no clips) takes the other's steps
    empty.merge(b)
    empty.merge(LaplaceFit())
    assert empty.count == whole.count == 6 * 64
    for step in range(2):
        assert empty.log_likelihood(step, 0.03) == pytest.approx(whole.log_likelihood(step, 0.03), rel=1e-12)
    torch.testing.assert_close(empty.scales(), whole.scales(), rtol=1e-8, atol=0)


# --- fitting the scales of deterministic candidates (framecast.evaluation.laplace) -----------------------------


def clip_batches(n_batches: int = 3, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    return [{"context": torch.rand(2, 3, 1, 8, 8, generator=g), "target": torch.rand(2, 2, 1, 8, 8, generator=g)}
            for _ in range(n_batches)]


def test_fit_scales_of_a_candidate_are_the_laplace_fit_of_its_predictions():
    from framecast.evaluation import Candidate
    from framecast.evaluation.laplace import fit_scales

    batches = clip_batches()
    copy_last = Candidate.baseline("copy_last")
    assert fit_scales([copy_last], batches) == 6
    direct = LaplaceFit()
    for b in batches:
        direct.add(CopyLast()(b["context"], 2), b["target"])
    torch.testing.assert_close(copy_last.scales, direct.scales(), rtol=0, atol=0)


def test_fit_scales_gathered_from_two_processes_are_those_of_one():
    """Each process fits its share of the clips; the gathered statistics give the scales of all of them."""
    from framecast.evaluation import Candidate
    from framecast.evaluation.laplace import fit_scales

    batches = clip_batches()
    whole = Candidate.baseline("linear")
    fit_scales([whole], batches)
    sent = []
    first = Candidate.baseline("linear")
    fit_scales([first], batches[:1], gather=lambda obj: sent.append(obj) or [obj])  # process 0, on its own
    second = Candidate.baseline("linear")
    assert fit_scales([second], batches[1:], gather=lambda obj: [sent[0], obj]) == 6  # process 1, gathered
    torch.testing.assert_close(second.scales, whole.scales, rtol=1e-8, atol=0)


def test_which_candidates_need_scales_and_where_they_are_fitted():
    from framecast.errors import InputError
    from framecast.evaluation import Candidate
    from framecast.evaluation.laplace import fit_scales, fit_split, needs_scales

    copy_last = Candidate.baseline("copy_last")
    assert needs_scales([copy_last], ["mse_frame", "psnr"]) == []  # no codelength asked
    assert needs_scales([copy_last], ["bits_per_pixel"]) == [copy_last]
    assert (fit_split("test"), fit_split("val")) == ("val", "test")  # never on the clips scored
    with pytest.raises(InputError, match="the val split has no clips"):
        fit_scales([copy_last], [], split="val")
