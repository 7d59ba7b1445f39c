"""ConvLSTM.

Shi, Chen, Wang, Yeung, Wong, Woo, "Convolutional LSTM Network: A Machine Learning Approach for
Precipitation Nowcasting", NeurIPS 2015. https://arxiv.org/abs/1506.04214
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.base import Predictor


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer (without the peephole terms, as in PredRNN's and OpenSTL's baselines).

    With ``*`` a convolution and ``o`` the Hadamard product::

        i = sigmoid(W_xi * x + W_hi * h + b_i)
        f = sigmoid(W_xf * x + W_hf * h + b_f)
        g = tanh   (W_xg * x + W_hg * h + b_g)
        o = sigmoid(W_xo * x + W_ho * h + b_o)
        c' = f o c + i o g
        h' = o o tanh(c')

    The eight convolutions are one convolution over ``cat(x, h)`` with ``4 * hidden`` outputs.
    Shapes: ``x (B, C_in, H, W)``, ``h, c (B, hidden, H, W)``. ``state=None`` is the zero state: the
    convolution then reads only ``x`` (the ``W_h * h`` terms and ``f o c`` are zero), the same result with
    the work on ``h = 0`` left out.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is None:
            conv = self.conv
            i, f, g, o = F.conv2d(x, conv.weight[:, : x.shape[1]], conv.bias, padding=conv.padding).chunk(4, dim=1)
            c = torch.sigmoid(i) * torch.tanh(g)
        else:
            h, c = state
            i, f, g, o = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(Predictor):
    """Stacked ConvLSTM predictor (Shi et al. 2015): layer ``l`` reads layer ``l-1``'s hidden state.

    Input ``context (B, T_ctx, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``; options as in
    :class:`framecast.models.base.Predictor`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        ins = [self.in_channels] + self.hidden[:-1]
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, self.kernel_size) for i, h in zip(ins, self.hidden))

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        return [None] * len(self.hidden)  # the zero state, which the cells skip the work on

    def step(self, x: Tensor, state):
        new = []
        for cell, s in zip(self.cells, state):
            h, c = cell(x, s)
            new.append((h, c))
            x = h
        return x, new, 0.0
