"""MAU: the Motion-Aware Unit, attention over past temporal states fused with the spatial state.

Chang, Zhang, Wang, Ma, Ye, Xiang, Gao, "MAU: A Motion-Aware Unit for Video Prediction and Beyond", NeurIPS 2021.
https://openreview.net/forum?id=qwtfY-3ibt7

Written after the official PyTorch implementation, https://github.com/ZhengChang467/MAU
(``core/layers/MAUCell.py``, ``core/models/MAU.py``; OpenSTL's port, ``openstl/models/mau_model.py`` and
``openstl/modules/mau_modules.py``, computes the same).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.e3d_lstm import _per_channel, _strip_prefix, patch_permutation
from framecast.models.heads import DeterministicHead
from framecast.models.registry import register_model


def _conv_norm(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    # GroupNorm with one group normalises over (C, H, W) as the official nn.LayerNorm([C, H, W]), with a
    # per-channel affine, so the model is not tied to one frame size.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2), nn.GroupNorm(1, out_ch)
    )


class MAUCell(nn.Module):
    """One motion-aware unit (MAU, Chang et al. 2021).

    With ``*`` a convolution followed by a layer norm, ``o`` the Hadamard product, ``T`` this layer's
    temporal state from the previous step, ``S`` the spatial state arriving from the layer below (the
    encoded frame at the bottom), and the last ``tau`` temporal states ``T_{t-j}`` of this layer and the
    spatial states ``S_{t-j}`` that entered it (``j = 1..tau``, zeros before the start)::

        attention:  a_j = < S_{t-j}, W_s' * S > / sqrt(d)     (sum over (C, H, W); d = C * H * W)
                    alpha = softmax_j(a_j),   T_att = sum_j alpha_j T_{t-j}
                    U = sigmoid(W_t' * T),    T_AMI = U o T + (1 - U) o T_att
        fusion:     [t_g, t_t, t_s] = W_t * T_AMI,   [s_g, s_t, s_s] = W_s * S
                    T' = sigmoid(t_g) o t_t + (1 - sigmoid(t_g)) o s_t
                    S' = sigmoid(s_g) o s_s + (1 - sigmoid(s_g)) o t_s    (+ S with cell_mode 'residual')

    ``conv_t`` (``W_t``, ``3 hidden``), ``conv_t_next`` (``W_t'``), ``conv_s`` (``W_s``, ``3 hidden``) and
    ``conv_s_next`` (``W_s'``), as the official ones, each a convolution with a bias and a layer norm.

    Shapes: ``T, S (B, hidden, H, W)``, ``t_att, s_att (tau, B, hidden, H, W)``; returns ``T', S'``.
    """

    def __init__(self, hidden: int, kernel_size: int, cell_mode: str = "normal"):
        super().__init__()
        self.hidden = hidden
        self.cell_mode = cell_mode
        self.conv_t = _conv_norm(hidden, 3 * hidden, kernel_size)
        self.conv_t_next = _conv_norm(hidden, hidden, kernel_size)
        self.conv_s = _conv_norm(hidden, 3 * hidden, kernel_size)
        self.conv_s_next = _conv_norm(hidden, hidden, kernel_size)

    def forward(self, t: Tensor, s: Tensor, t_att: Tensor, s_att: Tensor) -> tuple[Tensor, Tensor]:
        s_next = self.conv_s_next(s)
        t_next = self.conv_t_next(t)
        d = s_next[0].numel()
        weights = torch.softmax((s_att * s_next).sum(dim=(2, 3, 4)) / math.sqrt(d), dim=0)  # (tau, B)
        t_trend = (t_att * weights[:, :, None, None, None]).sum(dim=0)
        gate = torch.sigmoid(t_next)
        t_fusion = t * gate + (1 - gate) * t_trend
        t_g, t_t, t_s = self.conv_t(t_fusion).chunk(3, dim=1)
        s_g, s_t, s_s = self.conv_s(s).chunk(3, dim=1)
        t_gate = torch.sigmoid(t_g)
        s_gate = torch.sigmoid(s_g)
        t_new = t_gate * t_t + (1 - t_gate) * s_t
        s_new = s_gate * s_s + (1 - s_gate) * t_s
        if self.cell_mode == "residual":
            s_new = s_new + s
        return t_new, s_new


@register_model("mau")
class MAU(Predictor):
    """MAU: an encoder, stacked motion-aware units (:class:`MAUCell`) and a decoder.

    Paper: Zheng Chang, Xinfeng Zhang, Shanshe Wang, Siwei Ma, Yan Ye, Xinguang Xiang, Wen Gao, "MAU: A
    Motion-Aware Unit for Video Prediction and Beyond", NeurIPS 2021, https://openreview.net/forum?id=qwtfY-3ibt7.
    Code: official PyTorch implementation https://github.com/ZhengChang467/MAU (``core/models/MAU.py``,
    ``core/layers/MAUCell.py``); also in OpenSTL, https://github.com/chengtan9907/OpenSTL
    (``openstl/models/mau_model.py``).

    At step ``t``, with ``n = log2(sr_size)``::

        e_0 = LeakyReLU_0.2(W_e0 x_t)                  (1x1 convolution, C*p*p -> hidden[0])
        e_k = LeakyReLU_0.2(W_ek * e_{k-1})            (3x3, stride 2, k = 1..n)
        S^{-1}_t = e_n;   T^l_t, S^l_t = MAU_l(T^l_{t-1}, S^{l-1}_t, T^l_{t-tau:t-1}, S^{l-1}_{t-tau:t-1})
        d_0 = S^{L-1}_t;  d_k = W_dk *^T d_{k-1}       (3x3 transposed, stride 2; LeakyReLU but after the last)
                          (+ e_{n-k} with model_mode 'recall')
        y_t = head(d_n)                                (the official srcnn: a 1x1 convolution)

    so the units run at ``H / (p * sr_size)`` and the head at ``H / p``. The temporal state ``T`` stays in
    its layer; the spatial state ``S`` climbs the stack within a step (the official code keeps for every
    layer the spatial states that entered it, ``S^{l-1}``, and its own temporal states, ``T^l``).

    framecast differs from the official code only where it generalises it: the layer norms are
    ``GroupNorm(1, C)``, the same normalisation as the official ``nn.LayerNorm([C, H, W])`` with a
    per-channel affine, so the model is not tied to one frame size (and ``d`` is taken from the tensors);
    the official ``merge`` and ``conv_last_sr`` convolutions, which its forward never uses, are left out;
    layers of unequal ``hidden`` sizes (an extension; the official code needs equal sizes): ``S`` goes through
    a bias-free 1x1 convolution (``s_in[l]``) into a layer of another size, and with ``model_mode: recall``
    the encoder's features through one (``skip_in``) into the decoder when ``hidden[0] != hidden[-1]``.

    Args:
        tau: the past states the attention reads (official ``--tau``, 5).
        cell_mode: ``normal`` or ``residual`` (``S' + S``), the official ``--cell_mode``.
        model_mode: ``normal`` or ``recall`` (the decoder adds the encoder's features of the same size, a
            U-Net skip), the official ``--model_mode``.
        sr_size: the encoder's downsampling ``2^n`` (official ``--sr_size``, 4); ``H / patch_size`` must be
            divisible by it.
        **kwargs: the options of :class:`framecast.models.base.Predictor` (``kernel_size`` is the units'
            ``--filter_size``, official 5).

    Input ``context (B, T_ctx, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``. The state is
    ``(T, T_hist, S_hist)``: per layer ``T (B, hidden[l], h, w)`` and the last ``tau`` states
    ``(tau, B, hidden[l], h, w)``, ``h, w = H / (p * sr_size), W / (p * sr_size)``.
    """

    def __init__(
        self,
        tau: int = 5,
        cell_mode: Literal["normal", "residual"] = "normal",
        model_mode: Literal["normal", "recall"] = "normal",
        sr_size: int = 4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if tau < 1:
            raise ValueError(f"model.model_options.tau must be >= 1, got {tau}")
        if cell_mode not in ("normal", "residual"):
            raise ValueError(f"model.model_options.cell_mode must be 'normal' or 'residual', got {cell_mode!r}")
        if model_mode not in ("normal", "recall"):
            raise ValueError(f"model.model_options.model_mode must be 'normal' or 'recall', got {model_mode!r}")
        if sr_size < 1 or sr_size & (sr_size - 1):
            raise ValueError(f"model.model_options.sr_size must be a power of 2 (1, 2, 4, ...), got {sr_size}")
        self.tau = tau
        self.cell_mode = cell_mode
        self.model_mode = model_mode
        self.sr_size = sr_size
        n = sr_size.bit_length() - 1
        h0, top = self.hidden[0], self.hidden[-1]
        self.encoders = nn.ModuleList(
            [nn.Conv2d(self.in_channels, h0, 1)] + [nn.Conv2d(h0, h0, 3, stride=2, padding=1) for _ in range(n)]
        )
        self.cells = nn.ModuleList(MAUCell(h, self.kernel_size, cell_mode) for h in self.hidden)
        s_src = [h0] + self.hidden[:-1]
        self.s_in = nn.ModuleList(
            nn.Identity() if s == h else nn.Conv2d(s, h, 1, bias=False) for s, h in zip(s_src, self.hidden)
        )
        self.decoders = nn.ModuleList(
            nn.ConvTranspose2d(top, top, 3, stride=2, padding=1, output_padding=1) for _ in range(n)
        )
        self.skip_in = (
            nn.Conv2d(h0, top, 1, bias=False) if model_mode == "recall" and n > 0 and h0 != top else nn.Identity()
        )

    def check_input(self, context: Tensor) -> None:
        super().check_input(context)
        h, w = context.shape[-2:]
        q = self.patch_size * self.sr_size
        if h % q or w % q:
            raise ValueError(
                f"frame size {h}x{w} is not divisible by patch_size x sr_size = {self.patch_size} x "
                f"{self.sr_size} (model.patch_size, model.model_options.sr_size)"
            )

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        h, w = height // self.sr_size, width // self.sr_size
        ts = [like.new_zeros(batch, n, h, w) for n in self.hidden]
        t_hist = [like.new_zeros(self.tau, batch, n, h, w) for n in self.hidden]
        s_hist = [like.new_zeros(self.tau, batch, n, h, w) for n in self.hidden]
        return ts, t_hist, s_hist

    def step(self, x: Tensor, state):
        ts, t_hist, s_hist = state
        feats = []
        f = x
        for enc in self.encoders:
            f = F.leaky_relu(enc(f), 0.2)
            feats.append(f)
        s = f
        new_t, new_th, new_sh = [], [], []
        for cell, s_in, t, th, sh in zip(self.cells, self.s_in, ts, t_hist, s_hist):
            s = s_in(s)
            new_sh.append(torch.cat([sh[1:], s.unsqueeze(0)]))
            t, s = cell(t, s, th, sh)
            new_t.append(t)
            new_th.append(torch.cat([th[1:], t.unsqueeze(0)]))
        out = s
        last = len(self.decoders) - 1
        for i, dec in enumerate(self.decoders):
            out = dec(out)
            if i < last:
                out = F.leaky_relu(out, 0.2)
            if self.model_mode == "recall":
                out = out + self.skip_in(feats[-2 - i])
        return out, (new_t, new_th, new_sh), 0.0


def load_official_state_dict(model: MAU, state_dict: Mapping[str, Tensor]) -> None:
    """Load the weights of an official ZhengChang467/MAU network (``core/models/MAU.py``'s ``RNN``, or
    OpenSTL's ``MAU_Model``, which has the same names) into ``model``, in place.

    ``state_dict``: ``RNN.state_dict()``, or a checkpoint its ``Model.save`` wrote (``{"net_param": ...}``),
    or OpenSTL's method checkpoint (keys ``model.*``, optionally under ``"state_dict"``). The names map as
    ``cell_list.<l>.<conv>.<0|1>`` -> ``cells.<l>.<conv>.<0|1>``, ``encoders.0.encoder_t_conv-1`` ->
    ``encoders.0``, ``encoders.<k+1>.encoder_t<k>`` -> ``encoders.<k+1>``, ``decoders.<k>.c_decoder<k>`` ->
    ``decoders.<k>``, ``srcnn.0`` -> ``head.conv``; the unused ``merge`` and ``conv_last_sr`` are dropped.
    Converted: the patch channels (``(dy, dx, c)`` -> ``(c, dy, dx)``, a no-op for one channel or
    ``patch_size`` 1) and the ``LayerNorm([C, H, W])`` affines, which must be the same over ``(H, W)``
    (they are at initialisation; else ``ValueError``).

    ``model`` must have the official architecture: equal ``hidden`` sizes, the deterministic head, no
    ``residual``, and ``sr_size`` as the weights'; otherwise ``ValueError`` names the option. The official
    rollout then equals :meth:`Predictor.rollout` with the same teacher forcing.
    """
    if not isinstance(model, MAU):
        raise TypeError(f"load_official_state_dict needs a MAU, got {type(model).__name__}")
    sd = _strip_prefix(state_dict.get("net_param", state_dict))
    problems = []
    if len(set(model.hidden)) > 1:
        problems.append(f"hidden sizes must be equal (the official units need it), got {model.hidden}")
    if not isinstance(model.head, DeterministicHead) or model.residual:
        problems.append("the official network needs head: deterministic and residual: false")
    n_dec = len({k.split(".")[1] for k in sd if k.startswith("decoders.")})
    if n_dec != len(model.decoders):
        problems.append(f"model_options.sr_size must be {2 ** n_dec}, as the weights")
    if problems:
        raise ValueError("load_official_state_dict: " + "; ".join(problems))

    perm = patch_permutation(model.channels, model.patch_size)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in ("merge", "conv_last_sr"):
            continue
        if parts[0] == "srcnn":
            out[f"head.conv.{parts[-1]}"] = value[perm]
        elif parts[0] == "encoders":
            if parts[1] == "0" and parts[-1] == "weight":
                value = value[:, perm]
            out[f"encoders.{parts[1]}.{parts[-1]}"] = value
        elif parts[0] == "decoders":
            out[f"decoders.{parts[1]}.{parts[-1]}"] = value
        elif parts[0] == "cell_list":
            layer, conv, index, name = parts[1:5]
            if index == "1":
                value = _per_channel(key, value, "(H, W)")
            out[f"cells.{layer}.{conv}.{index}.{name}"] = value
        else:
            raise ValueError(f"load_official_state_dict: unexpected official weight {key!r}")
    model.load_state_dict(out, strict=True)
