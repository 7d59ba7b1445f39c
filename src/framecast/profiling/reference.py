"""A plain reference ConvLSTM for ``framecast speed`` to be compared against (timed by ``profiling.measure``).

This is the ConvLSTM as the textbook equations (Shi et al. 2015, without peepholes) and the most used
peer implementations write it: float32, eager, eight separate convolutions per cell (one per gate on the
input, one per gate on the hidden state), gates computed one by one::

    i = sigmoid(W_xi * x + W_hi * h + b_i)      f = sigmoid(W_xf * x + W_hf * h + b_f)
    g = tanh   (W_xg * x + W_hg * h + b_g)      o = sigmoid(W_xo * x + W_ho * h + b_o)
    c' = f o c + i o g                           h' = o o tanh(c')

Around the cells it does what :class:`framecast.models.ConvLSTM` does with the same options (patching by
``pixel_unshuffle``, a 1x1 output head, optional residual, the context fed in and the model's own
predictions fed back after it), so with the same weights (:meth:`ReferenceConvLSTM.load_from`) it computes
the same function and the same number of convolution FLOPs: the comparison is apples to apples, the
difference is only how the work is laid out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATES = ("i", "f", "g", "o")  # the order of the gates in framecast's fused convolution


class ReferenceConvLSTMCell(nn.Module):
    """One ConvLSTM layer with eight convolutions: ``conv_x{i,f,g,o}`` (with bias) and ``conv_h{i,f,g,o}``."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int):
        super().__init__()
        self.in_channels, self.hidden = in_channels, hidden
        pad = kernel_size // 2
        for gate in GATES:
            setattr(self, f"conv_x{gate}", nn.Conv2d(in_channels, hidden, kernel_size, padding=pad))
            setattr(self, f"conv_h{gate}", nn.Conv2d(hidden, hidden, kernel_size, padding=pad, bias=False))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i = torch.sigmoid(self.conv_xi(x) + self.conv_hi(h))
        f = torch.sigmoid(self.conv_xf(x) + self.conv_hf(h))
        g = torch.tanh(self.conv_xg(x) + self.conv_hg(h))
        o = torch.sigmoid(self.conv_xo(x) + self.conv_ho(h))
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c

    @torch.no_grad()
    def load_from(self, fused: nn.Module) -> ReferenceConvLSTMCell:
        """Copy the weights of a :class:`framecast.models.convlstm.ConvLSTMCell` (one convolution over
        ``cat(x, h)`` with ``4 * hidden`` outputs, gates in the order i, f, g, o)."""
        w, b = fused.conv.weight, fused.conv.bias
        n, cin = self.hidden, self.in_channels
        if tuple(w.shape[:2]) != (4 * n, cin + n):
            raise ValueError(f"cannot load a fused cell of weight {tuple(w.shape)} into ({4 * n}, {cin + n}, ...)")
        for k, gate in enumerate(GATES):
            rows = slice(k * n, (k + 1) * n)
            getattr(self, f"conv_x{gate}").weight.copy_(w[rows, :cin])
            getattr(self, f"conv_h{gate}").weight.copy_(w[rows, cin:])
            getattr(self, f"conv_x{gate}").bias.copy_(b[rows])
        return self


class ReferenceConvLSTM(nn.Module):
    """Stacked reference ConvLSTM with framecast's rollout: ``forward(context, horizon)`` returns all
    ``T_ctx + horizon - 1`` next-frame predictions ``(B, T_ctx + horizon - 1, C, H, W)``."""

    def __init__(self, channels: int = 1, hidden: list[int] | int = 64, kernel_size: int = 5,
                 patch_size: int = 1, residual: bool = False):
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        self.channels, self.hidden, self.patch_size, self.residual = channels, hidden, patch_size, residual
        ins = [channels * patch_size**2] + hidden[:-1]
        self.cells = nn.ModuleList(ReferenceConvLSTMCell(i, h, kernel_size) for i, h in zip(ins, hidden))
        self.head = nn.Conv2d(hidden[-1], channels * patch_size**2, 1)

    @classmethod
    def like(cls, model: nn.Module) -> ReferenceConvLSTM:
        """A reference of the same configuration as the framecast ``ConvLSTM`` ``model``, same weights."""
        ref = cls(model.channels, model.hidden, model.kernel_size, model.patch_size, model.residual)
        return ref.load_from(model)

    @torch.no_grad()
    def load_from(self, model: nn.Module) -> ReferenceConvLSTM:
        """Copy every weight of a framecast ``ConvLSTM`` with a deterministic head."""
        for mine, theirs in zip(self.cells, model.cells, strict=True):
            mine.load_from(theirs)
        self.head.weight.copy_(model.head.conv.weight)
        self.head.bias.copy_(model.head.conv.bias)
        return self

    def forward(self, context: Tensor, horizon: int) -> Tensor:
        b, t_ctx, _, height, width = context.shape
        p = self.patch_size
        state = [(context.new_zeros(b, n, height // p, width // p),) * 2 for n in self.hidden]
        frames = []
        for t in range(t_ctx + horizon - 1):
            frame = context[:, t] if t < t_ctx else frames[-1]
            x = F.pixel_unshuffle(frame, p) if p > 1 else frame
            for k, cell in enumerate(self.cells):
                state[k] = cell(x, state[k])
                x = state[k][0]
            out = self.head(x)
            out = F.pixel_shuffle(out, p) if p > 1 else out
            frames.append(frame + out if self.residual else out)
        return torch.stack(frames, 1)

    def training_loss(self, context: Tensor, target: Tensor) -> Tensor:
        """Mean squared error of every next-frame prediction, as framecast's ``loss: mse``, ``loss_frames: all``."""
        frames = self(context, target.shape[1])
        return F.mse_loss(frames, torch.cat([context[:, 1:], target], 1))
