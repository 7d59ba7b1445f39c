"""ConvGRU.

Ballas, Yao, Pal, Courville, "Delving Deeper into Convolutional Networks for Learning Video
Representations", ICLR 2016. https://arxiv.org/abs/1511.06432
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.registry import register_model


class ConvGRUCell(nn.Module):
    """One ConvGRU layer (Ballas et al. 2016).

    With ``*`` a convolution and ``o`` the Hadamard product::

        z  = sigmoid(W_z * x + U_z * h + b_z)            update gate
        r  = sigmoid(W_r * x + U_r * h + b_r)            reset gate
        h~ = tanh   (W   * x + U   * (r o h) + b)        candidate
        h' = (1 - z) o h + z o h~

    ``W_z, U_z, W_r, U_r`` are one convolution over ``cat(x, h)`` with ``2 * hidden`` outputs, and
    ``W, U`` one convolution over ``cat(x, r o h)`` with ``hidden`` outputs.
    Shapes: ``x (B, C_in, H, W)``, ``h (B, hidden, H, W)`` -> ``h' (B, hidden, H, W)``.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int):
        super().__init__()
        self.hidden = hidden
        pad = kernel_size // 2
        self.conv_gates = nn.Conv2d(in_channels + hidden, 2 * hidden, kernel_size, padding=pad)
        self.conv_cand = nn.Conv2d(in_channels + hidden, hidden, kernel_size, padding=pad)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        z, r = torch.sigmoid(self.conv_gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        cand = torch.tanh(self.conv_cand(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * cand


@register_model("convgru")
class ConvGRU(Predictor):
    """Stacked ConvGRU predictor: layer ``l`` reads layer ``l-1``'s hidden state, layer 0 the (patched)
    frame; the top layer's hidden state feeds the output head. Each layer is a :class:`ConvGRUCell`::

        z  = sigmoid(W_z * x + U_z * h + b_z)
        r  = sigmoid(W_r * x + U_r * h + b_r)
        h~ = tanh   (W   * x + U   * (r o h) + b)
        h' = (1 - z) o h + z o h~

    Paper: Nicolas Ballas, Li Yao, Chris Pal, Aaron Courville, "Delving Deeper into Convolutional Networks
    for Learning Video Representations", ICLR 2016, https://arxiv.org/abs/1511.06432.
    Code: the authors released none; a widely used PyTorch reference implementation is
    https://github.com/jacobkimmel/pytorch_convgru.

    Shapes: input ``context (B, T_ctx, C, H, W)`` in [0, 1] -> prediction ``(B, horizon, C, H, W)``; with
    ``p = patch_size`` the core runs on ``(B, C*p*p, H/p, W/p)`` and the state is one
    ``(B, hidden[l], H/p, W/p)`` tensor per layer.

    Options: only the shared ones of :class:`framecast.models.base.Predictor` (``**kwargs``).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        ins = [self.in_channels] + self.hidden[:-1]
        self.cells = nn.ModuleList(ConvGRUCell(i, h, self.kernel_size) for i, h in zip(ins, self.hidden))

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        return [like.new_zeros(batch, h, height, width) for h in self.hidden]

    def step(self, x: Tensor, state):
        new = []
        for cell, h in zip(self.cells, state):
            x = cell(x, h)
            new.append(x)
        return x, new, 0.0
