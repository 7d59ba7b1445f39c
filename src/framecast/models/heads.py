"""Output heads: from the top recurrent layer's hidden state to a frame or a per-pixel distribution.

Both heads are a 1x1 convolution in patch space followed by depth-to-space (``pixel_shuffle``), as in
PredRNN's ``conv_last``. A head is called as ``head(h, current)``: ``h (B, F, H/p, W/p)`` the top layer's
features, ``current (B, C, H, W)`` the frame the step read (a head built with ``residual=True`` predicts the
change from it; others may ignore it). Each returns ``(frame (B, C, H, W), params (B, P, H, W) or None)``;
``frame`` is what pictures, pixel metrics and the next input use. The warping heads ``warp`` and
``warp_mixture`` (the current frame moved by a predicted motion field) are in :mod:`framecast.models.warp`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.codelength import LEVELS

BIN = 1.0 / (LEVELS - 1)  # spacing of the 8-bit levels on [0, 1]
# The narrowest logistic: PixelCNN++ clamps log-scales at -7 on data in [-1, 1], where a level is 2/255 wide;
# on [0, 1] a level is half as wide, so the same narrowness relative to a level is e^-7 / 2. A confident
# prediction of an interior level then costs 0.04 bits (at e^-7 it would cost 0.34).
MIN_LOG_SCALE = -7.0 - math.log(2.0)


class DeterministicHead(nn.Module):
    """``frame = unpatch(conv1x1(h))`` (plus the current input frame when ``residual``)."""

    def __init__(self, in_features: int, channels: int, patch_size: int, residual: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.residual = residual
        self.conv = nn.Conv2d(in_features, channels * patch_size**2, 1)

    def forward(self, h: Tensor, current: Tensor | None = None) -> tuple[Tensor, None]:
        out = self.conv(h)
        out = F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out
        return (current + out if self.residual else out), None


class LogisticMixtureHead(nn.Module):
    """A discretized mixture of ``K`` logistics over the 256 levels of each sub-pixel.

    Salimans et al., "PixelCNN++", ICLR 2017, without the coupling between colour channels: every
    sub-pixel has its own ``K`` weights, means and log-scales, so ``params`` is ``(B, 3*K*C, H, W)``
    laid out as ``(3, K, C)``. The level ``k`` of a sub-pixel (value ``x = k/255``) has probability
    ``sum_j pi_j [sigmoid((x + 1/510 - mu_j)/s_j) - sigmoid((x - 1/510 - mu_j)/s_j)]``, with the first and
    last bins reaching to -inf and +inf, so the 256 probabilities sum to exactly 1. ``frame`` is the
    mean of that distribution: ``sum_j pi_j E[clip(X_j, 0, 1)]`` with ``X_j ~ Logistic(mu_j, s_j)``, which
    is ``1 - s_j (softplus((1 - mu_j)/s_j) - softplus(-mu_j/s_j))`` (the mean of the 8-bit value up to the
    rounding to the levels, at most half a level). Not ``sum_j pi_j mu_j``: the open end bins leave a
    mean beyond [0, 1] free, so a model trained on the codelength can put e.g. ``P(x = 1) = 0.9`` with
    means ``2.7`` and ``-20``, whose average clips to 0.
    """

    def __init__(self, in_features: int, channels: int, patch_size: int, num_mixtures: int = 5,
                 residual: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.residual = residual
        self.channels = channels
        self.k = num_mixtures
        self.conv = nn.Conv2d(in_features, 3 * num_mixtures * channels * patch_size**2, 1)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``params (..., 3*K*C, H, W)`` -> logits, means, log_scales, each ``(..., K, C, H, W)``."""
        shape = params.shape[:-3] + (3, self.k, self.channels) + params.shape[-2:]
        p = params.reshape(shape)
        return p.select(-5, 0), p.select(-5, 1), p.select(-5, 2).clamp(min=MIN_LOG_SCALE)

    def mean(self, params: Tensor) -> Tensor:
        """The mean ``(..., C, H, W)`` in [0, 1] of the distribution ``params (..., 3*K*C, H, W)``."""
        logits, means, log_scales = self.split(params)
        # E[clip(X, 0, 1)] = int_0^1 P(X > t) dt = 1 - s (softplus(b + w) - softplus(b)), b = -mu/s, w = 1/s.
        # For a wide logistic (small w) the difference cancels in float32; there it is
        # log1p(sigmoid(b) expm1(w)), which is exact and, for w < 10, cannot overflow.
        inv_s = torch.exp(-log_scales)
        b = -means * inv_s
        wide = inv_s < 10
        diff = torch.where(
            wide,
            torch.log1p(torch.sigmoid(b) * torch.expm1(inv_s.clamp(max=10))),
            F.softplus(b + inv_s) - F.softplus(b),
        )
        component = 1 - torch.exp(log_scales) * diff
        return (torch.softmax(logits, dim=-4) * component).sum(-4).clamp(0, 1)

    def forward(self, h: Tensor, current: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.conv(h)
        params = F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out
        if self.residual:  # the means are offsets from the current frame
            logits, means, log_scales = self.split(params)
            means = means + current.unsqueeze(-4)
            params = torch.stack([logits, means, log_scales], -5).flatten(-5, -3)
        return self.mean(params), params

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """Natural-log probability of the 8-bit values ``x (..., C, H, W)`` (in [0, 1]), per sub-pixel."""
        logits, means, log_scales = self.split(params.float())
        x = (x.float() * (LEVELS - 1)).round().div(LEVELS - 1).unsqueeze(-4)  # snap to the levels
        centered = x - means
        inv_s = torch.exp(-log_scales)
        plus_in = inv_s * (centered + BIN / 2)
        min_in = inv_s * (centered - BIN / 2)
        log_cdf_plus = F.logsigmoid(plus_in)  # log sigmoid(plus_in), for the level 0
        log_one_minus_cdf_min = F.logsigmoid(-min_in)  # log(1 - sigmoid(min_in)), for the level 255
        # log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)) for a > b: exact
        # and stable in float32 everywhere (the difference of two sigmoids near 0 or 1 cancels), so there is
        # no need for PixelCNN++'s density-at-the-centre fallback, which is off by up to 2x in the tails of
        # narrow logistics. For a bin much narrower than the scale, log(1 - exp(-d)) -> log(d).
        d = inv_s * BIN
        log_width = torch.where(
            d > 1e-4, torch.log(-torch.expm1(-d.clamp(min=1e-4))), math.log(BIN) - log_scales
        )
        log_mid = log_cdf_plus + log_one_minus_cdf_min + log_width
        log_p = torch.where(x < BIN / 2, log_cdf_plus, torch.where(x > 1 - BIN / 2, log_one_minus_cdf_min, log_mid))
        return torch.logsumexp(log_p + torch.log_softmax(logits, dim=-4), dim=-4)

    def bits(self, params: Tensor, x: Tensor) -> Tensor:
        """Codelength of ``x`` in bits, per sub-pixel, same shape as ``x``."""
        return -self.log_prob(params, x) / math.log(2.0)

    def sample(self, params: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """One draw ``(..., C, H, W)`` of 8-bit levels (values ``k/255``) from the distribution ``params``.

        Exact for the discretized mixture of :meth:`log_prob`: a component ``j ~ softmax(logits)`` (Gumbel-max),
        then ``X ~ Logistic(mu_j, T * s_j)`` by its inverse CDF, rounded to the nearest level and clipped to
        [0, 255]: ``round(255 X) = k`` exactly when ``X`` falls in level ``k``'s bin, and the end bins reach to
        -inf and +inf as in :meth:`log_prob`. ``temperature`` ``T`` scales every logistic's scale (1: the
        model's distribution; below 1 sharper, above 1 wider); the mixture weights stay.
        ``generator``: the random stream (on ``params``' device), e.g. seeded for reproducible draws."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits, means, log_scales = self.split(params.float())
        tiny = torch.finfo(torch.float32).tiny
        u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(min=tiny, max=1 - 1e-7)
        pick = (logits - torch.log(-torch.log(u))).argmax(dim=-4, keepdim=True)  # Gumbel-max: j ~ softmax(logits)
        mu = means.gather(-4, pick).squeeze(-4)
        scale = torch.exp(log_scales.gather(-4, pick).squeeze(-4)) * temperature
        v = torch.rand(mu.shape, generator=generator, device=mu.device).clamp_(min=tiny, max=1 - 1e-7)
        x = mu + scale * (torch.log(v) - torch.log1p(-v))  # the logistic's inverse CDF
        return (x * (LEVELS - 1)).round().clamp_(0, LEVELS - 1).div_(LEVELS - 1).to(params.dtype)


from framecast.models.warp import WarpHead, WarpMixtureHead  # (after the heads they build on)

HEADS = {"deterministic": DeterministicHead, "logistic_mixture": LogisticMixtureHead, "warp": WarpHead,
         "warp_mixture": WarpMixtureHead}


def build_head(name: str, in_features: int, channels: int, patch_size: int, num_mixtures: int = 5,
               residual: bool = False) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"model head must be one of {sorted(HEADS)}, got {name!r}")
    if name in ("logistic_mixture", "warp_mixture"):
        return HEADS[name](in_features, channels, patch_size, num_mixtures, residual=residual)
    if name == "warp":
        return WarpHead(in_features, channels, patch_size, residual=residual)
    return DeterministicHead(in_features, channels, patch_size, residual=residual)
