"""Teacher forcing schedules: when to feed the model the true frame instead of its own prediction.

A schedule is a pure function of the optimizer step, so a resumed run (which restores the global step)
continues exactly the same curve. :meth:`TeacherForcing.mask` returns ``(B, T_ctx + horizon - 2)`` in
{0, 1} for the inputs ``1 .. T_ctx + horizon - 2`` of :meth:`framecast.models.Predictor.rollout`
(1 = feed the truth), drawn on the requested device with ``torch.rand``; the first ``T_ctx - 1`` columns
are context inputs, the rest horizon inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class TeacherForcing:
    """No teacher forcing beyond the context: truth in the context, own predictions in the horizon.

    This is what the model sees at test time; ``mask`` returns ``None`` (the rollout's default).
    """

    def probabilities(self, step: int) -> tuple[float, float]:
        """``(p_context, p_horizon)``: the probability of feeding the truth at this step."""
        return 1.0, 0.0

    def mask(self, step: int, batch: int, context: int, horizon: int, device=None, generator=None) -> Tensor | None:
        return None

    def draw(self, step, batch, context, horizon, device=None, generator=None) -> Tensor:
        p_ctx, p_hor = self.probabilities(step)
        n_ctx, n_hor = context - 1, horizon - 1
        probs = torch.cat(
            [torch.full((n_ctx,), p_ctx, device=device), torch.full((n_hor,), p_hor, device=device)]
        ).expand(batch, -1)
        return (torch.rand(probs.shape, device=device, generator=generator) < probs).float()


class ScheduledSampling(TeacherForcing):
    """Scheduled sampling (Bengio et al., NeurIPS 2015) as PredRNN uses it.

    Context inputs are always true; a horizon input is true with probability
    ``eta(step) = max(end, start - rate * step)``, by default 1.0 falling by 2e-5 per step to 0 at step
    50,000 (PredRNN's ``sampling_start_value`` and ``sampling_changing_rate``).
    """

    def __init__(self, start: float = 1.0, end: float = 0.0, rate: float = 2e-5):
        if not (0 <= end <= start <= 1) or rate < 0:
            raise ValueError(f"scheduled_sampling needs 0 <= end <= start <= 1 and rate >= 0, got {start}, {end}, {rate}")
        self.start, self.end, self.rate = start, end, rate

    def probabilities(self, step: int) -> tuple[float, float]:
        return 1.0, max(self.end, self.start - self.rate * step)

    def mask(self, step, batch, context, horizon, device=None, generator=None):
        return self.draw(step, batch, context, horizon, device, generator)


class ReverseScheduledSampling(TeacherForcing):
    """Reverse scheduled sampling (Wang et al., PredRNN-v2, TPAMI 2022, Sec. 4.2).

    Between ``s1`` and ``s2``, context inputs are true with probability ``1 - 0.5 exp(-(step - s1)/alpha)``
    (rising from 0.5 towards 1; the official code's exponential ``r_sampling_step``), and horizon inputs
    with probability ``0.5 - 0.5 (step - s1)/(s2 - s1)`` (falling from 0.5 to 0). Before ``s1``: 0.5 and
    0.5; after ``s2``: 1 and 0, the test-time setting.
    """

    def __init__(self, s1: int = 25_000, s2: int = 50_000, alpha: float = 2_500.0):
        if not (0 <= s1 < s2) or alpha <= 0:
            raise ValueError(f"reverse_scheduled_sampling needs 0 <= s1 < s2 and alpha > 0, got {s1}, {s2}, {alpha}")
        self.s1, self.s2, self.alpha = s1, s2, alpha

    def probabilities(self, step: int) -> tuple[float, float]:
        if step < self.s1:
            return 0.5, 0.5
        if step < self.s2:
            return 1.0 - 0.5 * math.exp(-(step - self.s1) / self.alpha), 0.5 - 0.5 * (step - self.s1) / (self.s2 - self.s1)
        return 1.0, 0.0

    def mask(self, step, batch, context, horizon, device=None, generator=None):
        return self.draw(step, batch, context, horizon, device, generator)


SCHEDULES = {
    "none": TeacherForcing,
    "scheduled_sampling": ScheduledSampling,
    "reverse_scheduled_sampling": ReverseScheduledSampling,
}


def build_schedule(name: str, **options) -> TeacherForcing:
    if name not in SCHEDULES:
        raise ValueError(f"teacher_forcing must be one of {sorted(SCHEDULES)}, got {name!r}")
    try:
        return SCHEDULES[name](**options)
    except TypeError as e:
        raise ValueError(f"teacher_forcing_options for {name!r}: {e}") from None
