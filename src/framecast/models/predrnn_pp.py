"""PredRNN++: stacked Causal LSTMs with a Gradient Highway Unit after the first layer.

Wang, Gao, Long, Wang, Yu, "PredRNN++: Towards A Resolution of the Deep-in-Time Dilemma in Spatiotemporal
Predictive Learning", ICML 2018. https://arxiv.org/abs/1804.06300

Official code (TensorFlow 1): https://github.com/Yunbo426/predrnn-pp (``layers/CausalLSTMCell.py``,
``layers/GradientHighwayUnit.py``, ``nets/predrnn_pp.py``). Written after, and tested against, OpenSTL's
PyTorch port https://github.com/chengtan9907/OpenSTL (``openstl/modules/predrnnpp_modules.py``,
``openstl/models/predrnnpp_model.py``), whose weights :func:`load_openstl_state_dict` loads.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.official import openstl_state_dict, patch_permutation, per_channel
from framecast.models.predrnn import _conv
from framecast.models.registry import register_model


class CausalLSTMCell(nn.Module):
    """One Causal LSTM layer (PredRNN++, Wang et al. 2018, eq. 1).

    With ``*`` a convolution, ``o`` the Hadamard product, ``x`` the layer input, ``h, c`` this layer's
    hidden state and temporal memory from the previous step and ``m`` the spatiotemporal memory arriving
    from the layer below (for the bottom layer: from the top layer at the previous step)::

        (i, f, g)  = (sigmoid, sigmoid, tanh)(W_x * x + W_h * h + W_c * c   [+ 1 on f])
        c'         = f o c + i o g
        (i', f')   = sigmoid(W'_x * x + W_cm * c' + W_m * m   [+ 1 on f'])
        g'         = tanh   (W'_x * x + W_cm * c')
        m'         = f' o tanh(W_mm * m) + i' o g'
        o          = tanh   (W_xo * x + W_ho * h + W_co * c' + W_mo * m')
        h'         = o o tanh(W_1x1 * [c', m'])

    c' and m' are cascaded (m' reads c'), and the output gate is a ``tanh``, as in the paper and the
    official code. The convolutions, laid out as in OpenSTL's ``CausalLSTMCell``: ``conv_x``
    (``x -> 7 hidden``: i, f, g, i', f', g', o), ``conv_h`` (``h -> 4 hidden``: i, f, g, o), ``conv_c``
    (``c -> 3 hidden``: i, f, g), ``conv_m`` (``m -> 3 hidden``: i', f', W_mm * m), ``conv_c2m``
    (``c' -> 4 hidden``: i', g', f', o), ``conv_om`` (``m' -> hidden``) and the 1x1 ``conv_last``
    (``[c', m'] -> hidden``). The forget biases are 1.0 (``_forget_bias``).

    ``m_channels``: the channels of the arriving ``m`` (the layer below's ``hidden``, the top layer's for
    the bottom layer); ``conv_m`` maps them to this layer's size, as the official TensorFlow code does, so
    layers may differ in size. OpenSTL's port needs equal sizes (its ``conv_m`` reads ``hidden`` channels).

    ``bias``: the gates get a bias (``conv_x``'s); the other convolutions have none, as they would only
    duplicate it. OpenSTL's port has no bias anywhere (``bias=False`` is it); the official TensorFlow code
    has one in every convolution (``tf.layers.conv2d``), also inside ``tanh(W_mm * m)`` and
    ``tanh(W_1x1 * [c', m'])``, which framecast leaves out.

    ``layer_norm``: normalise the output of every gate convolution over ``(C, H, W)`` with a per-channel
    affine (``GroupNorm(1, C)``), which is the official ``tensor_layer_norm`` exactly (its ``--layer_norm``
    defaults to true); OpenSTL's ``nn.LayerNorm([C, H, W])`` has an affine per element instead (OpenSTL's
    Moving MNIST setting has no norm). With it, ``conv_x`` has no bias (the norm's shift replaces it).

    Shapes: ``x (B, C_in, H, W)``, ``h, c (B, hidden, H, W)``, ``m (B, m_channels, H, W)``; returns
    ``h', c', m'``, each ``(B, hidden, H, W)``.
    """

    _forget_bias = 1.0

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        m_channels: int,
        kernel_size: int,
        layer_norm: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.hidden = hidden
        self.conv_x = _conv(in_channels, 7 * hidden, kernel_size, layer_norm, bias=bias and not layer_norm)
        self.conv_h = _conv(hidden, 4 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_c = _conv(hidden, 3 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_m = _conv(m_channels, 3 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_c2m = _conv(hidden, 4 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_om = _conv(hidden, hidden, kernel_size, layer_norm, bias=False)
        self.conv_last = nn.Conv2d(2 * hidden, hidden, 1, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = self.conv_x(x).chunk(7, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(h).chunk(4, dim=1)
        i_c, f_c, g_c = self.conv_c(c).chunk(3, dim=1)
        i_m, f_m, m_m = self.conv_m(m).chunk(3, dim=1)

        i = torch.sigmoid(i_x + i_h + i_c)
        f = torch.sigmoid(f_x + f_h + f_c + self._forget_bias)
        g = torch.tanh(g_x + g_h + g_c)
        c_new = f * c + i * g

        i_cm, g_cm, f_cm, o_cm = self.conv_c2m(c_new).chunk(4, dim=1)
        i_p = torch.sigmoid(i_xp + i_m + i_cm)
        f_p = torch.sigmoid(f_xp + f_m + f_cm + self._forget_bias)
        g_p = torch.tanh(g_xp + g_cm)
        m_new = f_p * torch.tanh(m_m) + i_p * g_p

        o = torch.tanh(o_x + o_h + o_cm + self.conv_om(m_new))
        h_new = o * torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1)))
        return h_new, c_new, m_new


class GradientHighwayUnit(nn.Module):
    """The Gradient Highway Unit (GHU, PredRNN++ eq. 3)::

        p  = tanh   (W_px * x + W_pz * z)
        u  = sigmoid(W_ux * x + W_uz * z)
        z' = u o p + (1 - u) o z

    a gated shortcut whose ``(1 - u) o z`` path carries the gradient across steps without going through
    the Causal LSTMs. ``conv_x`` (``x -> 2 channels``: p, u) and ``conv_z`` (``z -> 2 channels``: p, u)
    as OpenSTL's ``x_concat`` and ``z_concat``; ``bias`` gives ``conv_x`` one (the official TensorFlow
    code has one in both, OpenSTL in neither). The weights start uniform in ``[-init_range, init_range]``
    (0.001, the official initializer, kept by OpenSTL), the bias at zero. ``layer_norm``: as in
    :class:`CausalLSTMCell`, over both convolutions' ``2 * channels`` outputs (the official code; OpenSTL's
    port builds a ``LayerNorm`` of ``channels`` for them, which fails at its first call).

    Shapes: ``x, z (B, channels, H, W)`` -> ``z' (B, channels, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        layer_norm: bool = False,
        bias: bool = True,
        init_range: float = 1e-3,
    ):
        super().__init__()
        self.channels = channels
        self.conv_x = _conv(channels, 2 * channels, kernel_size, layer_norm, bias=bias and not layer_norm)
        self.conv_z = _conv(channels, 2 * channels, kernel_size, layer_norm, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.uniform_(module.weight, -init_range, init_range)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        p, u = (self.conv_x(x) + self.conv_z(z)).chunk(2, dim=1)
        p, u = torch.tanh(p), torch.sigmoid(u)
        return u * p + (1 - u) * z


@register_model("predrnn_pp")
class PredRNNpp(Predictor):
    """PredRNN++: Causal LSTM layers (:class:`CausalLSTMCell`), a zig-zag spatiotemporal memory and a
    Gradient Highway Unit (:class:`GradientHighwayUnit`) between the first and the second layer.

    Paper: Yunbo Wang, Zhifeng Gao, Mingsheng Long, Jianmin Wang, Philip S. Yu, "PredRNN++: Towards A
    Resolution of the Deep-in-Time Dilemma in Spatiotemporal Predictive Learning", ICML 2018,
    https://arxiv.org/abs/1804.06300.
    Code: official TensorFlow implementation https://github.com/Yunbo426/predrnn-pp (``nets/predrnn_pp.py``);
    the golden reference is OpenSTL's PyTorch port https://github.com/chengtan9907/OpenSTL
    (``openstl/models/predrnnpp_model.py``, ``openstl/modules/predrnnpp_modules.py``).

    At step ``t`` with ``L`` layers (``L >= 2``)::

        h^0_t, c^0_t, M = CausalLSTM_0(x_t,     h^0_{t-1}, c^0_{t-1}, M)     (M: the top layer's, from t-1)
        z_t             = GHU(h^0_t, z_{t-1})
        h^1_t, c^1_t, M = CausalLSTM_1(z_t,     h^1_{t-1}, c^1_{t-1}, M)
        h^l_t, c^l_t, M = CausalLSTM_l(h^{l-1}_t, h^l_{t-1}, c^l_{t-1}, M)   for l = 2 .. L-1

    so the spatiotemporal memory ``M`` climbs the stack within a step and goes from the top back to the
    bottom between steps (as in PredRNN); ``M``, ``z`` and every ``h, c`` start at zero. The head reads
    ``h^{L-1}_t``.

    Differences from OpenSTL's port (each documented in the classes above; the golden tests show they are
    the only ones): the default ``bias: true`` adds gate biases (``bias: false`` is the port); layers may
    differ in size (``conv_m`` reads the arriving memory's channels, as the TensorFlow code); the layer
    norm is per channel (the TensorFlow code's) and also works in the GHU; the port's ``conv_o`` of every
    cell, which its forward never calls, is left out (and skipped by :func:`load_openstl_state_dict`).

    Args:
        layer_norm: normalise the gate convolutions (see :class:`CausalLSTMCell`); default False, as
            OpenSTL's Moving MNIST setting (the TensorFlow code's default is true).
        bias: gate biases and a bias in the head's 1x1 convolution. Default True; ``false`` is the
            OpenSTL network (:func:`load_openstl_state_dict` needs it).
        **kwargs: the options of :class:`framecast.models.base.Predictor`; ``hidden`` needs at least two
            layers (the GHU sits between the first two).

    Input ``context (B, T_ctx, C, H, W)`` (any ``T_ctx >= 1``) -> prediction ``(B, horizon, C, H, W)``.
    The state is ``(h, c, M, z)``: lists of ``(B, hidden[l], H/p, W/p)`` per layer, the memory
    ``(B, hidden[-1], H/p, W/p)`` and the highway state ``(B, hidden[0], H/p, W/p)``.
    """

    def __init__(self, layer_norm: bool = False, bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if len(self.hidden) < 2:
            raise ValueError(
                f"model.hidden: predrnn_pp needs at least 2 layers (its gradient highway sits between the first "
                f"two), got {self.hidden}"
            )
        self.layer_norm = layer_norm
        self.bias = bias
        ins = [self.in_channels] + self.hidden[:-1]
        m_src = [self.hidden[-1]] + self.hidden[:-1]  # where each layer's M comes from
        self.cells = nn.ModuleList(
            CausalLSTMCell(i, h, m, self.kernel_size, layer_norm, bias)
            for i, h, m in zip(ins, self.hidden, m_src)
        )
        self.highway = GradientHighwayUnit(self.hidden[0], self.kernel_size, layer_norm, bias)
        if not bias and getattr(self.head, "conv", None) is not None:
            self.head.conv.register_parameter("bias", None)  # OpenSTL's conv_last has no bias

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        hs = [like.new_zeros(batch, n, height, width) for n in self.hidden]
        cs = [like.new_zeros(batch, n, height, width) for n in self.hidden]
        m = like.new_zeros(batch, self.hidden[-1], height, width)
        z = like.new_zeros(batch, self.hidden[0], height, width)
        return hs, cs, m, z

    def step(self, x: Tensor, state):
        hs, cs, m, z = state
        new_h, new_c = [], []
        for layer, cell in enumerate(self.cells):
            h, c, m = cell(x, hs[layer], cs[layer], m)
            new_h.append(h)
            new_c.append(c)
            if layer == 0:
                z = self.highway(h, z)
                x = z
            else:
                x = h
        return new_h[-1], (new_h, new_c, m, z), 0.0


# --- loading OpenSTL weights ------------------------------------------------------------------------------
def load_openstl_state_dict(model: PredRNNpp, state_dict: Mapping[str, Tensor]) -> None:
    """Load the weights of an OpenSTL ``PredRNNpp_Model`` into ``model``, in place.

    ``state_dict``: ``PredRNNpp_Model.state_dict()`` (openstl/models/predrnnpp_model.py), or a checkpoint
    of OpenSTL's method (``{"state_dict": ...}`` with keys ``model.<name>``). Names map as
    ``cell_list.<l>.conv_<x|h|c|m|c2m|om>.0`` -> ``cells.<l>.conv_<...>`` (``.0``/``.1`` with the layer
    norm), ``cell_list.<l>.conv_last`` -> ``cells.<l>.conv_last``, ``gradient_highway.x_concat`` /
    ``z_concat`` -> ``highway.conv_x`` / ``conv_z``, ``conv_last`` -> ``head.conv``;
    ``cell_list.<l>.conv_o``, which OpenSTL's forward never uses, is skipped. The bottom ``conv_x``'s inputs
    and the head's outputs are permuted from the official patch layout (:func:`patch_permutation`), and a
    ``LayerNorm([C, H, W])`` affine becomes the per-channel one (:func:`per_channel`; ``ValueError`` if it
    varies over space; at its initialisation it does not).

    ``model`` must be the OpenSTL architecture: ``bias=False``, the deterministic head, no ``residual``,
    equal ``hidden`` sizes and ``layer_norm`` as OpenSTL's ``layer_norm``; otherwise ``ValueError`` names
    the option. The OpenSTL rollout then equals :meth:`Predictor.rollout` with the same teacher forcing.
    """
    if not isinstance(model, PredRNNpp):
        raise TypeError(f"load_openstl_state_dict needs a PredRNNpp, got {type(model).__name__}")
    sd = openstl_state_dict(model, state_dict)

    perm = patch_permutation(model.channels, model.patch_size)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "conv_last":
            out["head.conv." + parts[1]] = value[perm]
            continue
        if parts[0] == "cell_list" and parts[2] == "conv_o":
            continue  # defined but never called by OpenSTL's CausalLSTMCell.forward
        if parts[0] == "cell_list" and parts[2] == "conv_last":
            out[f"cells.{parts[1]}.conv_last.{parts[3]}"] = value
            continue
        if parts[0] == "cell_list" and len(parts) == 5:
            prefix, conv, index, name = f"cells.{parts[1]}", parts[2], parts[3], parts[4]
            if conv == "conv_x" and parts[1] == "0" and index == "0":
                value = value[:, perm]
        elif parts[0] == "gradient_highway" and len(parts) == 4 and parts[1] in ("x_concat", "z_concat"):
            prefix, conv, index, name = "highway", "conv_" + parts[1][0], parts[2], parts[3]
        else:
            raise ValueError(f"load_openstl_state_dict: unexpected weight {key!r}")
        if index == "1":
            value = per_channel(f"load_openstl_state_dict: the LayerNorm affine {key}", value)
        out[f"{prefix}.{conv}.{index}.{name}" if model.layer_norm else f"{prefix}.{conv}.{name}"] = value
    model.load_state_dict(out, strict=True)
