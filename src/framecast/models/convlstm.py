"""ConvLSTM.

Shi, Chen, Wang, Yeung, Wong, Woo, "Convolutional LSTM Network: A Machine Learning Approach for
Precipitation Nowcasting", NeurIPS 2015. https://arxiv.org/abs/1506.04214
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.registry import register_model


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer (without the peephole terms, as in PredRNN's and OpenSTL's baselines).

    With ``*`` a convolution and ``o`` the Hadamard product::

        i = sigmoid(W_xi * x + W_hi * h + b_i)
        f = sigmoid(W_xf * x + W_hf * h + b_f)
        g = tanh   (W_xg * x + W_hg * h + b_g)
        o = sigmoid(W_xo * x + W_ho * h + b_o)
        c' = f o c + i o g
        h' = o o tanh(c')

    The eight convolutions are stored as one convolution over ``cat(x, h)`` with ``4 * hidden`` outputs
    and run as that one convolution, or, given ``gates`` (:meth:`gate_weights`), as eight per-gate
    convolutions on copies of its slices: the same function and FLOPs in another layout (see
    :class:`ConvLSTM` for which one runs where). Shapes: ``x (B, C_in, H, W)``, ``h, c (B, hidden, H, W)``.
    ``state=None`` is the zero state: the convolutions then read only ``x`` (the ``W_h * h`` terms and
    ``f o c`` are zero), the same result with the work on ``h = 0`` left out.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def gate_weights(self, in_channels: int) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The fused weight as per-gate pieces ``([W_xi, W_xf, W_xg, W_xo], [W_hi, ...], [b_i, ...])``:
        contiguous, differentiable copies (made once per rollout, so the per-step convolutions read
        contiguous weights and the gradients flow back into the fused parameter once)."""
        n, w, b = self.hidden, self.conv.weight, self.conv.bias
        # clone, not a view: a view made under no_grad would be neither a leaf nor have a grad_fn
        def piece(t: Tensor) -> Tensor:
            return t.clone(memory_format=torch.contiguous_format)

        wx = [piece(w[k * n : (k + 1) * n, :in_channels]) for k in range(4)]
        wh = [piece(w[k * n : (k + 1) * n, in_channels:]) for k in range(4)]
        return wx, wh, [piece(b[k * n : (k + 1) * n]) for k in range(4)]

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None, gates=None) -> tuple[Tensor, Tensor]:
        if gates is not None:
            wx, wh, b = gates
            pad = self.conv.padding
            i, f, g, o = (F.conv2d(x, wx[k], b[k], padding=pad) for k in range(4))
            if state is None:
                c = torch.sigmoid(i) * torch.tanh(g)
            else:
                h, c = state
                i, f, g, o = (a + F.conv2d(h, wh[k], padding=pad) for k, a in enumerate((i, f, g, o)))
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        elif state is None:
            conv = self.conv
            i, f, g, o = F.conv2d(x, conv.weight[:, : x.shape[1]], conv.bias, padding=conv.padding).chunk(4, dim=1)
            c = torch.sigmoid(i) * torch.tanh(g)
        else:
            h, c = state
            i, f, g, o = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


@register_model("convlstm")
class ConvLSTM(Predictor):
    """Stacked ConvLSTM predictor: layer ``l`` reads layer ``l-1``'s hidden state, layer 0 the (patched)
    frame; the top layer's hidden state feeds the output head. Each layer is a :class:`ConvLSTMCell`
    (without the peephole terms)::

        i = sigmoid(W_xi * x + W_hi * h + b_i)
        f = sigmoid(W_xf * x + W_hf * h + b_f)
        g = tanh   (W_xg * x + W_hg * h + b_g)
        o = sigmoid(W_xo * x + W_ho * h + b_o)
        c' = f o c + i o g
        h' = o o tanh(c')

    Paper: Xingjian Shi, Zhourong Chen, Hao Wang, Dit-Yan Yeung, Wai-kin Wong, Wang-chun Woo,
    "Convolutional LSTM Network: A Machine Learning Approach for Precipitation Nowcasting", NeurIPS 2015,
    https://arxiv.org/abs/1506.04214.
    Code: there is no official PyTorch implementation (the authors' later MXNet code for the HKO-7
    benchmark, https://github.com/sxjscience/HKO-7, has ConvLSTM baselines); the PyTorch reference
    implementation people use is https://github.com/ndrplz/ConvLSTM_pytorch.

    Shapes: input ``context (B, T_ctx, C, H, W)`` in [0, 1] -> prediction ``(B, horizon, C, H, W)``; with
    ``p = patch_size`` the core runs on ``(B, C*p*p, H/p, W/p)`` and the state is ``(h, c)`` per layer,
    each ``(B, hidden[l], H/p, W/p)``.

    Options: only the shared ones of :class:`framecast.models.base.Predictor` (``**kwargs``).

    ``layout`` (an attribute, not saved): how the cells run their eight gate convolutions. ``"auto"``:
    eight per-gate convolutions where they run in float32 on the CPU (oneDNN runs eight 128 -> 128
    convolutions 3-5 % faster per FLOP than one 256 -> 512 there), one fused convolution everywhere else
    (bfloat16 on the CPU, where the fused one is faster, and GPUs). ``"fused"`` / ``"per_gate"`` force one.
    The weights, the function and the FLOPs are the same in both.
    """

    layout = "auto"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        ins = [self.in_channels] + self.hidden[:-1]
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, self.kernel_size) for i, h in zip(ins, self.hidden))

    def runs_per_gate(self, like: Tensor) -> bool:
        """Whether a rollout on tensors like ``like`` runs the gates as eight convolutions (``layout``)."""
        if self.layout not in ("auto", "fused", "per_gate"):
            raise ValueError(f"ConvLSTM.layout must be auto, fused or per_gate, got {self.layout!r}")
        if self.layout != "auto":
            return self.layout == "per_gate"
        cpu_float32 = like.device.type == "cpu" and self.cells[0].conv.weight.dtype == torch.float32
        return cpu_float32 and not torch.is_autocast_enabled("cpu")

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        """``(layers, gates)``: the zero state of every layer (``None``, which the cells skip the work on)
        and, in the per-gate layout, each cell's per-gate weights for this rollout."""
        gates = None
        if self.runs_per_gate(like):
            ins = [self.in_channels] + self.hidden[:-1]
            gates = [cell.gate_weights(i) for cell, i in zip(self.cells, ins)]
        return [None] * len(self.hidden), gates

    def step(self, x: Tensor, state):
        layers, gates = state
        new = []
        for k, (cell, s) in enumerate(zip(self.cells, layers)):
            h, c = cell(x, s, None if gates is None else gates[k])
            new.append((h, c))
            x = h
        return x, (new, gates), 0.0
