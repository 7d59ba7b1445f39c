"""Codelength of 8-bit frames under a discretized Laplace around a deterministic prediction.

A model with a per-pixel distribution (``head: logistic_mixture``) gives the codelength of the true frames
directly. A deterministic model or a baseline only gives a point prediction ``mu`` in [0, 1] (clipped);
it is turned into a distribution over the 256 levels ``k / 255`` of each sub-pixel by a *discretized
Laplace* with scale ``b``, one scale per horizon step, fitted by maximum likelihood on the validation
split and then applied, fixed, to the test split. So every predictor, baselines included, has a
codelength on the same footing.

The distribution. With ``F`` the CDF of Laplace(mu, b) and ``h = 1 / 510`` half the spacing of the
levels, level ``x = k / 255`` has probability

    P(x) = F(x + h) - F(x - h)        for 0 < k < 255,
    P(0) = F(h),   P(1) = 1 - F(1 - h)  (the end bins reach to -inf and +inf),

so the 256 probabilities sum to exactly 1 (the bins tile the real line). :func:`laplace_log_prob`
evaluates ``log P`` in float64 in a form that never subtracts two nearly equal numbers:
with ``u = (x + h - mu) / b`` and ``l = (x - h - mu) / b`` (``u = +inf`` for the top level,
``l = -inf`` for the bottom one)

    u <= 0:      log P = log(1/2) + u + log(1 - e^(l - u))
    l >= 0:      log P = log(1/2) - l + log(1 - e^(l - u))
    l < 0 < u:   log P = log(-(expm1(l) + expm1(-u)) / 2)

The fit. Write ``a = |x - mu|``. Every (prediction, truth) pair with ``a >= h`` (or an end level with its
prediction on the far side of the bin edge) contributes ``-(a - h) / b`` plus a term depending on ``b``
alone, so those pairs enter the log-likelihood only through their count and their sum of ``a - h``;
the pairs with ``a < h`` enter through a non-linear term of ``a`` and are kept (exact values, duplicates
merged). :class:`LaplaceFit` accumulates exactly these sufficient statistics batch by batch, so the fit
over a whole split is exact and needs no second pass over the data. The log-likelihood is concave in
the precision ``1 / b`` (every term is linear in ``1 / b`` or the log of a concave positive function of
it), hence unimodal in ``log b``: :func:`fit_scale` maximizes the exact discretized likelihood by
golden-section search on ``log b`` over ``[MIN_SCALE, MAX_SCALE]`` to a relative precision of 1e-10.
This is the exact MLE of the discretized model, not the continuous Laplace's mean absolute error.
``b`` is clamped to ``MIN_SCALE = 1e-4`` (a 40th of a level): a perfect prediction would otherwise
drive ``b`` to 0 and any later error to an infinite codelength.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

LEVELS = 256
HALF = 0.5 / (LEVELS - 1)  # half the spacing of the 8-bit levels on [0, 1]
MIN_SCALE = 1e-4
MAX_SCALE = 1e3
LOG_HALF = math.log(0.5)
LN2 = math.log(2.0)


def snap(x: Tensor) -> Tensor:
    """Values in [0, 1] -> the nearest of the 256 levels ``k / 255``, float64."""
    return (x.double().clamp(0, 1) * (LEVELS - 1)).round() / (LEVELS - 1)


def laplace_log_prob(x: Tensor, mu: Tensor, scale: Tensor | float) -> Tensor:
    """Natural-log probability of the 8-bit values ``x`` (snapped to the levels) under the discretized
    Laplace centred on ``mu`` (clipped to [0, 1]) with scale ``scale`` (clamped to ``MIN_SCALE``);
    all broadcast together, float64."""
    x = snap(x)
    mu = mu.double().clamp(0, 1)
    b = torch.as_tensor(scale, dtype=torch.float64, device=x.device).clamp(min=MIN_SCALE)
    z = x - mu
    lo = torch.where(x < HALF, -math.inf, (z - HALF) / b)
    hi = torch.where(x > 1 - HALF, math.inf, (z + HALF) / b)
    log_width = torch.log(-torch.expm1(lo - hi))  # log(1 - e^(l - u)); 0 for an end bin
    left = LOG_HALF + hi + log_width  # whole bin left of the centre
    right = LOG_HALF - lo + log_width  # whole bin right of the centre
    mid = torch.log(-0.5 * (torch.expm1(lo) + torch.expm1(-hi)))  # the bin holds the centre
    return torch.where(hi <= 0, left, torch.where(lo >= 0, right, mid))


def laplace_bits(pred: Tensor, target: Tensor, scales: Tensor | float) -> Tensor:
    """Codelength in bits of each sub-pixel of ``target (B, T, C, H, W)`` under the discretized Laplace
    around ``pred`` (same shape) with one scale per step (``scales (T,)``) or a single scale."""
    scales = torch.as_tensor(scales, dtype=torch.float64, device=pred.device)
    if scales.dim() == 1:
        scales = scales.view(1, -1, 1, 1, 1)
    return -laplace_log_prob(target, pred, scales) / LN2


def laplace_probabilities(mu: float, scale: float) -> Tensor:
    """The 256 level probabilities ``(256,)`` of a discretized Laplace (a check: they sum to 1)."""
    levels = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)
    return laplace_log_prob(levels, torch.tensor(float(mu), dtype=torch.float64), scale).exp()


class _StepStats:
    """Sufficient statistics of the discretized Laplace likelihood for one horizon step (numpy, float64:
    the fit evaluates the likelihood ~60 times on small arrays, where torch's per-op overhead dominates)."""

    def __init__(self):
        self.n = 0  # all pairs
        self.n_interior_far = 0  # interior level, a >= h: log P = log 1/2 - (a - h)/b + log(1 - e^(-2h/b))
        self.n_end_far = 0  # end level, prediction beyond the bin edge: log P = log 1/2 - (a - h)/b
        self.sum_far = 0.0  # sum of (a - h) over both far kinds
        self.interior_near: list[tuple[np.ndarray, np.ndarray]] = []  # (unique a < h, counts), interior levels
        self.end_near: list[tuple[np.ndarray, np.ndarray]] = []  # (unique a < h, counts), end levels

    @staticmethod
    def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        values = np.concatenate([v for v, _ in parts])
        counts = np.concatenate([c for _, c in parts])
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq))

    def compact(self) -> None:
        for name in ("interior_near", "end_near"):
            parts = getattr(self, name)
            if len(parts) > 1:
                setattr(self, name, [self._merge(parts)])

    def merge(self, other: _StepStats) -> None:
        """Add ``other``'s pairs (e.g. another process's) to these."""
        self.n += other.n
        self.n_interior_far += other.n_interior_far
        self.n_end_far += other.n_end_far
        self.sum_far += other.sum_far
        self.interior_near += other.interior_near
        self.end_near += other.end_near
        self.compact()

    def add(self, mu: Tensor, x: Tensor) -> None:
        mu = mu.detach().double().clamp(0, 1).flatten().cpu().numpy()
        x = snap(x.detach()).flatten().cpu().numpy()
        a = np.abs(x - mu)
        end = (x < HALF) | (x > 1 - HALF)
        near = a < HALF  # for an end level: the prediction is inside the end bin's finite edge
        self.n += a.size
        self.n_interior_far += int(np.count_nonzero(~end & ~near))
        self.n_end_far += int(np.count_nonzero(end & ~near))
        self.sum_far += float((a[~near] - HALF).sum())
        for mask, parts in ((~end & near, self.interior_near), (end & near, self.end_near)):
            if mask.any():
                uniq, counts = np.unique(a[mask], return_counts=True)
                parts.append((uniq, counts.astype(np.float64)))
        if len(self.interior_near) + len(self.end_near) > 64:
            self.compact()

    def log_likelihood(self, scale: float) -> float:
        """Exact natural-log likelihood of all pairs added, at scale ``scale``."""
        self.compact()
        b = max(float(scale), MIN_SCALE)
        ll = (self.n_interior_far + self.n_end_far) * LOG_HALF - self.sum_far / b
        ll += self.n_interior_far * math.log(-math.expm1(-2 * HALF / b))
        if self.interior_near:
            a, c = self.interior_near[0]
            inner = -0.5 * (np.expm1(-(HALF - a) / b) + np.expm1(-(HALF + a) / b))
            ll += float((c * np.log(inner)).sum())
        if self.end_near:
            a, c = self.end_near[0]
            ll += float((c * np.log1p(-0.5 * np.exp(-(HALF - a) / b))).sum())
        return ll


def fit_scale(log_likelihood, lo: float = MIN_SCALE, hi: float = MAX_SCALE, rtol: float = 1e-10) -> float:
    """The ``b`` in ``[lo, hi]`` maximizing the unimodal (in ``log b``) ``log_likelihood(b)``:
    golden-section search on ``log b`` until the bracket is narrower than ``rtol`` (relative)."""
    a, d = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    b_, c_ = d - g * (d - a), a + g * (d - a)
    fb, fc = log_likelihood(math.exp(b_)), log_likelihood(math.exp(c_))
    while d - a > rtol:
        if fb >= fc:  # the maximum is in [a, c_]
            d, c_, fc = c_, b_, fb
            b_ = d - g * (d - a)
            fb = log_likelihood(math.exp(b_))
        else:  # in [b_, d]
            a, b_, fb = b_, c_, fc
            c_ = a + g * (d - a)
            fc = log_likelihood(math.exp(c_))
    best = math.exp((a + d) / 2)
    for edge in (lo, hi):  # a monotone likelihood: the maximum is the bound itself
        if log_likelihood(edge) > log_likelihood(best):
            best = edge
    return best


class LaplaceFit:
    """Maximum-likelihood scales of the discretized Laplace, one per horizon step.

    ``add(pred, target)`` with ``(B, T, C, H, W)`` batches (any number, exact over all of them);
    ``scales() -> (T,)`` float64; ``log_likelihood(step, b)`` the exact log-likelihood (nats) of step
    ``step``'s pairs at scale ``b``.
    """

    def __init__(self):
        self.steps: list[_StepStats] = []

    def add(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape or pred.dim() != 5:
            raise ValueError(f"pred and target must both be (B, T, C, H, W), got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}")
        t = pred.shape[1]
        if not self.steps:
            self.steps = [_StepStats() for _ in range(t)]
        if t != len(self.steps):
            raise ValueError(f"batches have {t} steps, earlier ones {len(self.steps)}")
        for k in range(t):
            self.steps[k].add(pred[:, k], target[:, k])

    def merge(self, other: LaplaceFit) -> None:
        """Add ``other``'s pairs (e.g. another process's): the fit is then exactly the fit of both."""
        if not other.steps:
            return
        if not self.steps:
            self.steps = [_StepStats() for _ in other.steps]
        if len(other.steps) != len(self.steps):
            raise ValueError(f"cannot merge fits of {len(other.steps)} and {len(self.steps)} steps")
        for mine, theirs in zip(self.steps, other.steps):
            mine.merge(theirs)

    @property
    def count(self) -> int:
        """Sub-pixels added per step."""
        return self.steps[0].n if self.steps else 0

    def log_likelihood(self, step: int, scale: float) -> float:
        return self.steps[step].log_likelihood(scale)

    def scales(self) -> Tensor:
        if not self.count:
            raise ValueError("no data to fit the Laplace scales on")
        return torch.tensor([fit_scale(s.log_likelihood) for s in self.steps], dtype=torch.float64)
