"""ConvLSTM.

Shi, Chen, Wang, Yeung, Wong, Woo, "Convolutional LSTM Network: A Machine Learning Approach for
Precipitation Nowcasting", NeurIPS 2015. https://arxiv.org/abs/1506.04214
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.probe import choose
from framecast.models.registry import register_model

LAYOUTS = ("fused", "per_gate")


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


PROBE_MIN_FLOPS = 5e7
"""Cells whose one-step forward computes fewer FLOPs than this run fused without a measurement: there the
time is the per-call overhead (eight calls against one), and the layouts' difference is below the noise."""


def time_layouts(in_channels: int, hidden: int, kernel_size: int, batch: int, height: int, width: int,
                 rounds: int = 5) -> dict[str, float]:
    """Seconds of one float32 forward+backward of a :class:`ConvLSTMCell` step of this shape on the CPU in each
    layout (:data:`LAYOUTS`), the fastest of ``rounds`` interleaved rounds after one warm-up: a fresh cell on
    random input (the caller's random stream is left as it was), with gradients on and the caller's other
    modes (``inference_mode``, autocast, a FLOP counter) off."""
    from torch.utils._python_dispatch import _disable_current_modes

    with (torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad(),
          torch.autocast("cpu", enabled=False), _disable_current_modes()):
        cell = ConvLSTMCell(in_channels, hidden, kernel_size)
        x = torch.randn(batch, in_channels, height, width)
        h = torch.randn(batch, hidden, height, width, requires_grad=True)
        c = torch.randn(batch, hidden, height, width)
        times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        for r in range(rounds + 1):
            for layout in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
                gates = cell.gate_weights(in_channels)  # (made once per rollout: not timed)
                t0 = time.perf_counter()
                h2, c2 = cell(x, (h, c), gates if layout == "per_gate" else None)
                (h2.sum() + c2.sum()).backward()
                if r:
                    times[layout].append(time.perf_counter() - t0)
    return {layout: min(t) for layout, t in times.items()}


def choose_layout(in_channels: int, hidden: int, kernel_size: int, batch: int, height: int, width: int) -> str:
    """The faster layout of a float32 cell of this shape on this CPU: measured once (:func:`time_layouts`) and
    cached per machine and shape (:func:`framecast.models.probe.choose`); ``fused`` for a cell too small to
    matter (:data:`PROBE_MIN_FLOPS`)."""
    flops = 2 * (in_channels + hidden) * 4 * hidden * kernel_size**2 * height * width * batch
    if flops < PROBE_MIN_FLOPS:
        return "fused"
    key = f"convlstm cell {in_channels}->{hidden} kernel {kernel_size} batch {batch} {height}x{width} float32"
    return choose(key, lambda: time_layouts(in_channels, hidden, kernel_size, batch, height, width))


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

    ``layout`` (an attribute, not saved): how the cells run their eight gate convolutions. ``"auto"``: in
    float32 on the CPU, whichever of one fused convolution and eight per-gate ones is faster for each cell's
    shape on this machine, measured once (:func:`choose_layout`: seconds at the literature's 128 channels)
    and cached per machine, shape and thread count (:mod:`framecast.models.probe`); one fused convolution
    everywhere else (bfloat16
    on the CPU, where oneDNN's fused one was faster, and GPUs). ``"fused"`` / ``"per_gate"`` force one.
    The weights, the function and the FLOPs are the same in both.
    """

    layout = "auto"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        ins = [self.in_channels] + self.hidden[:-1]
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, self.kernel_size) for i, h in zip(ins, self.hidden))

    def cell_layouts(self, batch: int, height: int, width: int, like: Tensor) -> list[str]:
        """The layout of each cell for a rollout at ``batch`` x ``height`` x ``width`` on tensors like ``like``."""
        if self.layout not in ("auto", *LAYOUTS):
            raise ValueError(f"ConvLSTM.layout must be auto, fused or per_gate, got {self.layout!r}")
        if self.layout != "auto":
            return [self.layout] * len(self.cells)
        cpu_float32 = like.device.type == "cpu" and self.cells[0].conv.weight.dtype == torch.float32
        if not cpu_float32 or torch.is_autocast_enabled("cpu"):
            return ["fused"] * len(self.cells)
        ins = [self.in_channels] + self.hidden[:-1]
        return [choose_layout(i, n, self.kernel_size, batch, height, width) for i, n in zip(ins, self.hidden)]

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        """``(layers, gates)``: the zero state of every layer (``None``, which the cells skip the work on)
        and, where a cell runs per gate, its per-gate weights for this rollout (``gates``: ``None`` where
        every cell runs fused)."""
        ins = [self.in_channels] + self.hidden[:-1]
        layouts = self.cell_layouts(batch, height, width, like)
        gates = [cell.gate_weights(i) if layout == "per_gate" else None
                 for cell, i, layout in zip(self.cells, ins, layouts)]
        return [None] * len(self.hidden), None if "per_gate" not in layouts else gates

    def step(self, x: Tensor, state):
        layers, gates = state
        new = []
        for k, (cell, s) in enumerate(zip(self.cells, layers)):
            h, c = cell(x, s, None if gates is None else gates[k])
            new.append((h, c))
            x = h
        return x, (new, gates), 0.0
