"""Parameter-free baselines every benchmark reports beside the learned predictors."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framecast.models.registry import register_model


@register_model("copy_last", kind="baseline")
class CopyLast(nn.Module):
    """Predict that nothing moves: every future frame equals the last context frame.

    ``context (B, T_ctx, C, H, W)`` -> ``(B, horizon, C, H, W)``.
    """

    channels = None
    patch_size = 1

    def forward(self, context: Tensor, horizon: int) -> Tensor:
        return context[:, -1:].expand(-1, horizon, -1, -1, -1).clone()


@register_model("linear", kind="baseline")
class Linear(nn.Module):
    """Extrapolate the last two context frames linearly: ``x_{T+k} = x_T + k (x_T - x_{T-1})``, clipped to
    [0, 1]. With a single context frame it is :class:`CopyLast`.

    ``context (B, T_ctx, C, H, W)`` -> ``(B, horizon, C, H, W)``.
    """

    channels = None
    patch_size = 1

    def forward(self, context: Tensor, horizon: int) -> Tensor:
        last = context[:, -1:]
        if context.shape[1] < 2:
            return last.expand(-1, horizon, -1, -1, -1).clone()
        delta = last - context[:, -2:-1]
        k = torch.arange(1, horizon + 1, device=context.device, dtype=context.dtype).view(1, -1, 1, 1, 1)
        return (last + k * delta).clamp(0, 1)
