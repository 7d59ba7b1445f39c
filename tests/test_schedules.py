import math

import pytest
import torch

from framecast.schedules import ReverseScheduledSampling, ScheduledSampling, TeacherForcing, build_schedule


def test_none_feeds_truth_in_context_only():
    s = TeacherForcing()
    assert s.mask(123, 4, 10, 10) is None
    assert s.probabilities(0) == (1.0, 0.0)


@pytest.mark.parametrize("step,p", [(0, 1.0), (1, 1 - 2e-5), (25_000, 0.5), (49_999, 2e-5), (50_000, 0.0), (90_000, 0.0)])
def test_scheduled_sampling_known_answers(step, p):
    p_ctx, p_hor = ScheduledSampling().probabilities(step)
    assert p_ctx == 1.0
    assert p_hor == pytest.approx(p, abs=1e-12)


@pytest.mark.parametrize(
    "step,p_ctx,p_hor",
    [
        (0, 0.5, 0.5),
        (24_999, 0.5, 0.5),
        (25_000, 0.5, 0.5),
        (27_500, 1 - 0.5 * math.exp(-1), 0.45),
        (30_000, 1 - 0.5 * math.exp(-2), 0.4),
        (37_500, 1 - 0.5 * math.exp(-5), 0.25),
        (50_000, 1.0, 0.0),
        (60_000, 1.0, 0.0),
    ],
)
def test_reverse_scheduled_sampling_known_answers(step, p_ctx, p_hor):
    got = ReverseScheduledSampling().probabilities(step)
    assert got[0] == pytest.approx(p_ctx, abs=1e-12)
    assert got[1] == pytest.approx(p_hor, abs=1e-12)


def test_mask_shape_and_empirical_fraction():
    torch.manual_seed(0)
    s = ReverseScheduledSampling()
    step = 30_000
    m = s.mask(step, 4000, 10, 10)
    assert m.shape == (4000, 18) and set(m.unique().tolist()) <= {0.0, 1.0}
    p_ctx, p_hor = s.probabilities(step)
    assert m[:, :9].mean().item() == pytest.approx(p_ctx, abs=0.01)
    assert m[:, 9:].mean().item() == pytest.approx(p_hor, abs=0.01)
    m = ScheduledSampling().mask(10_000, 4000, 10, 10)
    assert m[:, :9].min() == 1.0
    assert m[:, 9:].mean().item() == pytest.approx(0.8, abs=0.01)


def test_mask_seeded_on_device():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s = ScheduledSampling()
    assert torch.equal(s.mask(20_000, 8, 5, 5, generator=g1), s.mask(20_000, 8, 5, 5, generator=g2))


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="teacher_forcing must be one of"):
        build_schedule("sometimes")
    with pytest.raises(ValueError, match="s1 < s2"):
        build_schedule("reverse_scheduled_sampling", s1=10, s2=5)
    with pytest.raises(ValueError, match="teacher_forcing_options"):
        build_schedule("scheduled_sampling", speed=3)
