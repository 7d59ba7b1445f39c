"""MIM (Memory In Memory): an ST-LSTM layer under MIM blocks that model the non-stationary part of the
dynamics from the differences of consecutive hidden states.

Wang, Zhang, Zhu, Long, Wang, Yu, "Memory In Memory: A Predictive Neural Network for Learning Higher-Order
Non-Stationarity from Spatiotemporal Dynamics", CVPR 2019. https://arxiv.org/abs/1811.07490

Official code (TensorFlow 1): https://github.com/Yunbo426/MIM (``src/layers/MIMBlock.py``,
``src/layers/MIMN.py``, ``src/models/mim.py``). Written after, and tested against, OpenSTL's PyTorch port
https://github.com/chengtan9907/OpenSTL (``openstl/modules/mim_modules.py``, ``openstl/models/mim_model.py``),
whose weights :func:`load_openstl_state_dict` loads.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.official import openstl_state_dict, patch_permutation, per_channel
from framecast.models.predrnn import SpatioTemporalLSTMCell, _conv
from framecast.models.registry import register_model


class PeepholeLSTMCell(nn.Module):
    """The recurrent unit of MIM-N and MIM-S (MIM, eqs. 5 and 6): a ConvLSTM with Hadamard peepholes on its cell.

    With ``*`` a convolution and ``o`` the Hadamard product, input ``x``, hidden state ``h`` and cell ``c``::

        i  = sigmoid(W_xi * x + W_hi * h + w_ci o c + b_i)
        f  = sigmoid(W_xf * x + W_hf * h + w_cf o c + b_f + 1)
        g  = tanh   (W_xg * x + W_hg * h + b_g)
        c' = f o c + i o g
        o  = sigmoid(W_xo * x + W_ho * h + w_co o c' + b_o)
        h' = o o tanh(c')

    * MIM-N (non-stationary module): ``x`` the difference of consecutive hidden states of the layer below
      (``H^{l-1}_t - H^{l-1}_{t-1}``, or the MIM-N output ``D^{l-1}_t`` below), ``h = D^l_{t-1}``,
      ``c = N^l_{t-1}``; ``h' = D^l_t``.
    * MIM-S (stationary module): ``x = D^l_t``, ``h = C^l_{t-1}`` (the block's temporal memory),
      ``c = S^l_{t-1}``; ``h' = T^l_t`` replaces the forget gate's ``f o C^l_{t-1}``.

    ``conv_x`` (``x -> 4 hidden``: i, g, f, o) and ``conv_h`` (``h -> 4 hidden``: i, g, f, o) as OpenSTL's
    ``conv_x_concat`` and ``conv_h_concat``; ``bias`` gives ``conv_x`` the biases ``b`` (the official
    TensorFlow code has a bias in both, OpenSTL in neither). The peepholes ``w_ci, w_cf`` (``peephole_c``)
    and ``w_co`` (``peephole_o``) start at zero as in OpenSTL; they are **one weight per channel**,
    ``(2 hidden, 1, 1)`` and ``(hidden, 1, 1)``, where the official code and OpenSTL have one per element,
    ``(2 hidden, H, W)``: framecast's model is not tied to one frame size (weights with a per-element
    peephole that is the same over space load exactly, see :func:`load_openstl_state_dict`). ``layer_norm``:
    normalise both convolutions' outputs over ``(C, H, W)`` with a per-channel affine (``GroupNorm(1, C)``,
    the official ``tensor_layer_norm``; OpenSTL's ``LayerNorm([C, H, W])`` has one per element).

    Shapes: ``x (B, in_channels, H, W)``, ``h, c (B, hidden, H, W)`` -> ``h', c'`` of ``(B, hidden, H, W)``.
    """

    _forget_bias = 1.0

    def __init__(
        self, in_channels: int, hidden: int, kernel_size: int, layer_norm: bool = False, bias: bool = True
    ):
        super().__init__()
        self.hidden = hidden
        self.conv_x = _conv(in_channels, 4 * hidden, kernel_size, layer_norm, bias=bias and not layer_norm)
        self.conv_h = _conv(hidden, 4 * hidden, kernel_size, layer_norm, bias=False)
        self.peephole_c = nn.Parameter(torch.zeros(2 * hidden, 1, 1))
        self.peephole_o = nn.Parameter(torch.zeros(hidden, 1, 1))

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i_x, g_x, f_x, o_x = self.conv_x(x).chunk(4, dim=1)
        i_h, g_h, f_h, o_h = self.conv_h(h).chunk(4, dim=1)
        w_i, w_f = self.peephole_c.chunk(2, dim=0)
        i = torch.sigmoid(i_x + i_h + w_i * c)
        f = torch.sigmoid(f_x + f_h + w_f * c + self._forget_bias)
        c_new = f * c + i * torch.tanh(g_x + g_h)
        h_new = torch.sigmoid(o_x + o_h + self.peephole_o * c_new) * torch.tanh(c_new)
        return h_new, c_new


class MIMBlock(nn.Module):
    """One MIM block (MIM, eq. 4): an ST-LSTM whose forget gate on the temporal memory is replaced by the
    stationary module MIM-S (``stationary``, a :class:`PeepholeLSTMCell`) fed by the non-stationary
    module's output ``D``.

    With ``x = H^{l-1}_t`` the layer input, ``h, c`` this layer's hidden state and temporal memory from
    the previous step, ``m`` the spatiotemporal memory from the layer below, ``d = D^l_t`` and ``s`` MIM-S's
    cell::

        (i_x, g_x, f_x, o_x) = W_x * x + b          (shared by both memories, as in the official code)
        (i_t, g_t, o_t)      = W_t * h
        (i_s, g_s, f_s, o_s) = W_s * m
        i  = sigmoid(i_x + i_t)        g  = tanh(g_x + g_t)
        i' = sigmoid(i_x + i_s)        g' = tanh(g_x + g_s)        f' = sigmoid(f_x + f_s + 1)
        o  = sigmoid(o_x + o_t + o_s)
        m' = f' o m + i' o g'
        T, s' = MIM-S(d, c, s)
        c' = T + i o g
        h' = o o tanh(W_1x1 * [c', m'])

    ``conv_x`` (``x -> 4 hidden``), ``conv_t`` (``h -> 3 hidden``), ``conv_s`` (``m -> 4 hidden``) and the
    1x1 ``conv_last`` as OpenSTL's ``conv_x_cc``, ``conv_t_cc``, ``conv_s_cc``, ``conv_last``. ``conv_x``
    reads ``in_channels`` (the layer below's size); OpenSTL's port swaps which of ``conv_t_cc`` /
    ``conv_x_cc`` reads the input's channels, so it needs equal sizes.
    ``bias``, ``layer_norm``: as :class:`PeepholeLSTMCell`.

    Shapes: ``x (B, in_channels, H, W)``, ``d, h, c, m, s (B, hidden, H, W)``; returns ``h', c', m', s'``, each ``(B, hidden, H, W)``.
    """

    _forget_bias = 1.0

    def __init__(
        self, in_channels: int, hidden: int, kernel_size: int, layer_norm: bool = False, bias: bool = True
    ):
        super().__init__()
        self.hidden = hidden
        self.conv_x = _conv(in_channels, 4 * hidden, kernel_size, layer_norm, bias=bias and not layer_norm)
        self.conv_t = _conv(hidden, 3 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_s = _conv(hidden, 4 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_last = nn.Conv2d(2 * hidden, hidden, 1, bias=False)
        self.stationary = PeepholeLSTMCell(hidden, hidden, kernel_size, layer_norm, bias)

    def forward(self, x: Tensor, d: Tensor, h: Tensor, c: Tensor, m: Tensor, s: Tensor):
        i_x, g_x, f_x, o_x = self.conv_x(x).chunk(4, dim=1)
        i_t, g_t, o_t = self.conv_t(h).chunk(3, dim=1)
        i_s, g_s, f_s, o_s = self.conv_s(m).chunk(4, dim=1)
        i = torch.sigmoid(i_x + i_t)
        g = torch.tanh(g_x + g_t)
        i_p = torch.sigmoid(i_x + i_s)
        g_p = torch.tanh(g_x + g_s)
        f_p = torch.sigmoid(f_x + f_s + self._forget_bias)
        o = torch.sigmoid(o_x + o_t + o_s)
        m_new = f_p * m + i_p * g_p
        t, s_new = self.stationary(d, c, s)
        c_new = t + i * g
        h_new = o * torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1)))
        return h_new, c_new, m_new, s_new


@register_model("mim")
class MIM(Predictor):
    """MIM: an ST-LSTM bottom layer under MIM blocks (:class:`MIMBlock`), each fed the output of a
    non-stationary module MIM-N (:class:`PeepholeLSTMCell`) on the differences of the hidden states below.

    Paper: Yunbo Wang, Jianjin Zhang, Hongyu Zhu, Mingsheng Long, Jianmin Wang, Philip S. Yu, "Memory In
    Memory: A Predictive Neural Network for Learning Higher-Order Non-Stationarity from Spatiotemporal
    Dynamics", CVPR 2019, https://arxiv.org/abs/1811.07490.
    Code: official TensorFlow implementation https://github.com/Yunbo426/MIM (``src/models/mim.py``); the
    golden reference is OpenSTL's PyTorch port https://github.com/chengtan9907/OpenSTL
    (``openstl/models/mim_model.py``, ``openstl/modules/mim_modules.py``).

    At step ``t`` with ``L >= 2`` layers (``M`` the spatiotemporal memory, which climbs the stack within a
    step and goes from the top back to the bottom between steps, as in PredRNN)::

        H^0_t, C^0_t, M   = ST-LSTM(x_t, H^0_{t-1}, C^0_{t-1}, M)
        X^1_t             = H^0_t - H^0_{t-1}                    (zero at t = 0)
        D^l_t, N^l_t      = MIM-N_l(X^l_t, D^l_{t-1}, N^l_{t-1}),  X^l_t = D^{l-1}_t for l >= 2
        H^l_t, C^l_t, M, S^l_t = MIMBlock_l(H^{l-1}_t, D^l_t, H^l_{t-1}, C^l_{t-1}, M, S^l_{t-1})   l = 1 .. L-1

    Every state starts at zero; the head reads ``H^{L-1}_t``. The bottom layer is PredRNN's ST-LSTM, as
    in the paper and OpenSTL (the TensorFlow code uses a lighter variant, ``SpatioTemporalLSTMCellv2``).

    Differences from OpenSTL's port (the golden tests show they are the only ones):

    * MIM-S's cell ``S`` is part of the rollout state. OpenSTL keeps it on the module
      (``MIMBlock.convlstm_c``): it is never reset, so it leaks from one batch (and from training into
      evaluation) into the next (hence OpenSTL's assertion that the training and validation batch sizes
      are equal), and it is detached at every step, which cuts its gradient through time. With a fresh
      OpenSTL model the rollout is the same; its gradients differ by exactly that detach.
    * MIM-N runs at every step, at ``t = 0`` on a zero difference from a zero state. OpenSTL (and the
      TensorFlow code) call it at ``t = 0`` but discard the result (``D^l_0 = 0``, its state starting at
      ``t = 1``). Without biases and layer norm that result is exactly zero, so the rollouts agree; with
      them framecast keeps the units' response to "no change" (and every parameter gets a gradient from
      a rollout of two steps).
    * The peepholes are per channel (:class:`PeepholeLSTMCell`), the layer norm per channel (the
      TensorFlow code's), and OpenSTL's unused ``MIMN.conv_last`` is left out.
    * Layers may differ in size (the official code and OpenSTL need equal sizes): ``M`` then goes through
      a bias-free 1x1 convolution (``m_in[l]``) on its way into a layer of another size, as in framecast's
      PredRNN; with equal sizes there is none.
    * ``bias: true`` (the default) adds gate biases and a head bias; ``bias: false`` is the OpenSTL network.

    Args:
        layer_norm: normalise the gate convolutions; default False, as OpenSTL's Moving MNIST setting.
        bias: gate biases (``conv_x`` of every unit) and a bias in the head's 1x1 convolution.
        **kwargs: the options of :class:`framecast.models.base.Predictor`; ``hidden`` needs at least two
            layers (the ST-LSTM and one MIM block).

    Input ``context (B, T_ctx, C, H, W)`` (any ``T_ctx >= 1``) -> prediction ``(B, horizon, C, H, W)``. The
    state is ``(H, C, M, D, N, S, first)``: lists of ``(B, hidden[l], H/p, W/p)`` (``H, C`` per layer,
    ``D, N, S`` per MIM block), the memory ``(B, hidden[-1], H/p, W/p)`` and whether no step has run yet.
    """

    def __init__(self, layer_norm: bool = False, bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if len(self.hidden) < 2:
            raise ValueError(
                f"model.hidden: mim needs at least 2 layers (an ST-LSTM and one or more MIM blocks), got {self.hidden}"
            )
        self.layer_norm = layer_norm
        self.bias = bias
        k, hid = self.kernel_size, self.hidden
        cells: list[nn.Module] = [SpatioTemporalLSTMCell(self.in_channels, hid[0], k, layer_norm, bias)]
        cells += [MIMBlock(hid[l - 1], hid[l], k, layer_norm, bias) for l in range(1, len(hid))]
        self.cells = nn.ModuleList(cells)
        self.nonstationary = nn.ModuleList(
            PeepholeLSTMCell(hid[l - 1], hid[l], k, layer_norm, bias) for l in range(1, len(hid))
        )
        m_src = [hid[-1]] + hid[:-1]  # where each layer's M comes from
        self.m_in = nn.ModuleList(
            nn.Identity() if s == h else nn.Conv2d(s, h, 1, bias=False) for s, h in zip(m_src, hid)
        )
        if not bias and getattr(self.head, "conv", None) is not None:
            self.head.conv.register_parameter("bias", None)  # OpenSTL's conv_last has no bias

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        def zeros(sizes):
            return [like.new_zeros(batch, n, height, width) for n in sizes]

        blocks = self.hidden[1:]
        m = like.new_zeros(batch, self.hidden[-1], height, width)
        return zeros(self.hidden), zeros(self.hidden), m, zeros(blocks), zeros(blocks), zeros(blocks), True

    def step(self, x: Tensor, state):
        hs, cs, m, ds, ns, ss, first = state
        h, c, m, _, _ = self.cells[0](x, hs[0], cs[0], self.m_in[0](m))
        new_h, new_c, new_d, new_n, new_s = [h], [c], [], [], []
        diff = torch.zeros_like(h) if first else h - hs[0]
        for layer in range(1, len(self.hidden)):
            d, n = self.nonstationary[layer - 1](diff, ds[layer - 1], ns[layer - 1])
            h, c, m, s = self.cells[layer](h, d, hs[layer], cs[layer], self.m_in[layer](m), ss[layer - 1])
            diff = d
            new_h.append(h)
            new_c.append(c)
            new_d.append(d)
            new_n.append(n)
            new_s.append(s)
        return h, (new_h, new_c, m, new_d, new_n, new_s, False), 0.0


# --- loading OpenSTL weights ------------------------------------------------------------------------------
_BLOCK_CONVS = {
    "conv_x_cc": "conv_x",
    "conv_t_cc": "conv_t",
    "conv_s_cc": "conv_s",
    "conv_x_concat": "stationary.conv_x",
    "conv_h_concat": "stationary.conv_h",
}
_DIFF_CONVS = {"conv_x_concat": "conv_x", "conv_h_concat": "conv_h"}
_PEEPHOLES = {"ct_weight": "peephole_c", "oc_weight": "peephole_o"}


def load_openstl_state_dict(model: MIM, state_dict: Mapping[str, Tensor]) -> None:
    """Load the weights of an OpenSTL ``MIM_Model`` into ``model``, in place.

    ``state_dict``: ``MIM_Model.state_dict()`` (openstl/models/mim_model.py), or a checkpoint of OpenSTL's
    method (``{"state_dict": ...}`` with keys ``model.<name>``). Names map as

    * ``stlstm_layer.0.conv_<x|h|m|o>.0``, ``.conv_last`` -> ``cells.0.<same>`` (the ST-LSTM);
    * ``stlstm_layer.<l>.conv_<x|t|s>_cc.0`` -> ``cells.<l>.conv_<x|t|s>``, ``.conv_last`` ->
      ``cells.<l>.conv_last``; its MIM-S ``conv_<x|h>_concat.0``, ``ct_weight``, ``oc_weight`` ->
      ``cells.<l>.stationary.conv_<x|h>``, ``.peephole_c``, ``.peephole_o``;
    * ``stlstm_layer_diff.<l-1>.conv_<x|h>_concat.0``, ``ct_weight``, ``oc_weight`` ->
      ``nonstationary.<l-1>.<...>``; its ``conv_last``, which OpenSTL's ``MIMN.forward`` never uses, is skipped;
    * ``conv_last`` -> ``head.conv``.

    The bottom ``conv_x``'s inputs and the head's outputs are permuted from the official patch layout; a
    per-element peephole ``(2C, H, W)`` or ``LayerNorm([C, H, W])`` affine becomes the per-channel one
    (``ValueError`` if it varies over space; OpenSTL initialises the peepholes at zero and the affine at
    one and zero, which do not).

    ``model`` must be the OpenSTL architecture: ``bias=False``, the deterministic head, no ``residual``,
    equal ``hidden`` sizes and ``layer_norm`` as OpenSTL's; otherwise ``ValueError`` names the option. A fresh
    OpenSTL model's rollout (see :class:`MIM` for why "fresh") then equals :meth:`Predictor.rollout`.
    """
    if not isinstance(model, MIM):
        raise TypeError(f"load_openstl_state_dict needs a MIM, got {type(model).__name__}")
    sd = openstl_state_dict(model, state_dict)

    perm = patch_permutation(model.channels, model.patch_size)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        where = f"load_openstl_state_dict: {key}"
        if parts[0] == "conv_last":
            out["head.conv." + parts[1]] = value[perm]
            continue
        if parts[0] not in ("stlstm_layer", "stlstm_layer_diff") or len(parts) < 3:
            raise ValueError(f"load_openstl_state_dict: unexpected weight {key!r}")
        layer, rest = int(parts[1]), parts[2:]
        if parts[0] == "stlstm_layer_diff":
            prefix, convs = f"nonstationary.{layer}", _DIFF_CONVS
            if rest[0] == "conv_last":
                continue  # defined but never called by OpenSTL's MIMN.forward
        elif layer == 0:
            prefix, convs = "cells.0", {c: c for c in ("conv_x", "conv_h", "conv_m", "conv_o")}
        else:
            prefix, convs = f"cells.{layer}", _BLOCK_CONVS
            if rest[0] in _PEEPHOLES:  # a MIM block's own peepholes are its MIM-S's
                prefix = f"{prefix}.stationary"
        if len(rest) == 1 and rest[0] in _PEEPHOLES:
            shape = value.shape[0], 1, 1
            out[f"{prefix}.{_PEEPHOLES[rest[0]]}"] = per_channel(f"{where} (a peephole)", value).view(shape)
        elif rest == ["conv_last", "weight"] and parts[0] == "stlstm_layer":
            out[f"{prefix}.conv_last.weight"] = value
        elif len(rest) == 3 and rest[0] in convs and rest[1] in ("0", "1"):
            conv, index, name = convs[rest[0]], rest[1], rest[2]
            if index == "1":
                value = per_channel(f"{where} (a LayerNorm affine)", value)
            elif layer == 0 and conv == "conv_x" and parts[0] == "stlstm_layer":
                value = value[:, perm]
            out[f"{prefix}.{conv}.{index}.{name}" if model.layer_norm else f"{prefix}.{conv}.{name}"] = value
        else:
            raise ValueError(f"load_openstl_state_dict: unexpected weight {key!r}")
    model.load_state_dict(out, strict=True)
