"""E3D-LSTM: Eidetic 3D LSTM, 3D convolutions over a window of inputs and a recall gate over past memories.

Wang, Jiang, Yang, Li, Long, Fei-Fei, "Eidetic 3D LSTM: A Model for Video Prediction and Beyond", ICLR 2019.
https://openreview.net/forum?id=B1lKS2AqtX

Official implementation (TensorFlow 1): https://github.com/google/e3d_lstm (``src/layers/rnn_cell.py``,
``src/models/eidetic_3d_lstm_net.py``). Written after OpenSTL's PyTorch port, the golden reference here,
https://github.com/chengtan9907/OpenSTL (``openstl/models/e3dlstm_model.py``,
``openstl/modules/e3dlstm_modules.py``), with two of its bugs fixed (see :class:`E3DLSTM`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.heads import DeterministicHead
from framecast.models.official import patch_permutation
from framecast.models.registry import register_model


class WindowConv3d(nn.Module):
    """A 3D convolution over a window ``(B, C_in, w, H, W) -> (B, C_out, w, H, W)``, as OpenSTL's ``tf_Conv3d``.

    The kernel is ``temporal_kernel x k x k``: "valid" in time (``w - temporal_kernel + 1`` outputs) and
    "same" in space, and the outputs are then resampled to ``w`` in time by nearest neighbour (output slice
    ``j`` is convolution output ``floor(j * (w - temporal_kernel + 1) / w)``, ``F.interpolate``'s
    ``nearest``). With the defaults (``w = 2``, temporal kernel 2) the one output is repeated. ``layer_norm``:
    then normalised over ``(C, w, H, W)`` with a per-channel affine (``GroupNorm(1, C_out)``).
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, temporal_kernel: int, layer_norm: bool, bias: bool
    ):
        super().__init__()
        pad = kernel_size // 2
        self.conv = nn.Conv3d(
            in_ch, out_ch, (temporal_kernel, kernel_size, kernel_size), padding=(0, pad, pad), bias=bias
        )
        self.norm = nn.GroupNorm(1, out_ch) if layer_norm else None

    def forward(self, x: Tensor) -> Tensor:
        w = x.shape[2]
        y = self.conv(x)
        n = y.shape[2]
        if n != w:
            index = torch.div(torch.arange(w, device=y.device) * n, w, rounding_mode="floor")
            y = y.index_select(2, index)
        return y if self.norm is None else self.norm(y)


def recall(query: Tensor, memories: Tensor) -> Tensor:
    """The recall attention ``softmax(Q K^T) V`` with ``K = V`` the eidetic memories (no ``1/sqrt(C)``).

    ``query (B, C, w, H, W)``: one query per position of the window, its ``C`` channels the features;
    ``memories (B, C, n, H, W)``: the keys (and values), ``n / w`` past memories of ``w`` slices each.
    Returns ``(B, C, w, H, W)``. As the official ``_attn`` on its channels-last tensors.
    """
    b, c, w, h, wd = query.shape
    q = query.flatten(2).transpose(1, 2)  # (B, w*H*W, C)
    k = memories.flatten(2).transpose(1, 2)  # (B, n*H*W, C)
    out = F.scaled_dot_product_attention(q, k, k, scale=1.0)
    return out.transpose(1, 2).reshape(b, c, w, h, wd)


class Eidetic3DLSTMCell(nn.Module):
    """One E3D-LSTM layer.

    With ``*`` the window convolution (:class:`WindowConv3d`), ``o`` the Hadamard product, ``x`` the layer
    input, ``h, c`` this layer's hidden state and memory from the previous step, ``M`` the spatiotemporal
    memory arriving from the layer below (or from the top layer at the previous step) and ``C_hist`` the
    eidetic memories (this layer's past ``c``, concatenated in time), all ``(B, ., w, H, W)``::

        i  = sigmoid(W_xi * x + W_hi * h)
        r  = sigmoid(W_xr * x + W_hr * h)                          (the recall gate)
        g  = tanh   (W_xg * x + W_hg * h)
        c' = LayerNorm(c + Recall(r, C_hist)) + i o g,   Recall(r, C) = softmax(r C^T) C   (:func:`recall`)
        i' = sigmoid(W'_xi * x + W_mi * M)
        f' = sigmoid(W'_xf * x + W_mf * M + 1)                     (forget bias 1.0)
        g' = tanh   (W'_xg * x + W_mg * M)
        M' = f' o tanh(W_mm * M) + i' o g'
        o  = tanh   (W_xo * x + W_ho * h + W_co * c' + W_mo * M')
        h' = sigmoid(o) o tanh(W_1x1 * [c', M'])

    as the official code (and OpenSTL) compute it, where the paper writes ``M' = f' o M + i' o g'`` and
    ``o = sigmoid(...)``, ``h' = o o tanh(...)``. ``conv_x`` (``x -> 7 hidden``: i, g, r, o, i', g', f'),
    ``conv_h`` (``h -> 4 hidden``: i, g, r, o), ``conv_m`` (``M -> 4 hidden``: i', f', g', m; OpenSTL's
    ``conv_gm``), ``conv_oc`` and ``conv_om`` (``c' -> hidden``, ``M' -> hidden``; OpenSTL's
    ``conv_new_cell``, ``conv_new_gm``) and the 1x1x1 ``conv_last`` compute the terms. ``norm_c`` is always
    there (also in the official code); ``layer_norm`` adds one after each of the five window convolutions.
    ``bias``: ``conv_x`` has a bias (the gates'; OpenSTL's port has no bias anywhere, the TensorFlow code one
    in every convolution); with ``layer_norm`` it has none (the norm's shift replaces it).

    Shapes: ``x (B, C_in, w, H, W)``, ``h, c, M (B, hidden, w, H, W)``, ``C_hist (B, hidden, n*w, H, W)``;
    returns ``h', c', M'``, each ``(B, hidden, w, H, W)``.
    """

    _forget_bias = 1.0

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel_size: int,
        temporal_kernel: int,
        layer_norm: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.hidden = hidden

        def conv(i: int, o: int, b: bool = False) -> WindowConv3d:
            return WindowConv3d(i, o, kernel_size, temporal_kernel, layer_norm, b)

        self.conv_x = conv(in_channels, 7 * hidden, bias and not layer_norm)
        self.conv_h = conv(hidden, 4 * hidden)
        self.conv_m = conv(hidden, 4 * hidden)
        self.conv_oc = conv(hidden, hidden)
        self.conv_om = conv(hidden, hidden)
        self.conv_last = nn.Conv3d(2 * hidden, hidden, 1, bias=False)
        self.norm_c = nn.GroupNorm(1, hidden)
        self.recall = recall

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor, history: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        i_x, g_x, r_x, o_x, ip_x, gp_x, fp_x = self.conv_x(x).chunk(7, dim=1)
        i_h, g_h, r_h, o_h = self.conv_h(h).chunk(4, dim=1)
        i = torch.sigmoid(i_x + i_h)
        r = torch.sigmoid(r_x + r_h)
        g = torch.tanh(g_x + g_h)
        c_new = self.norm_c(c + self.recall(r, history)) + i * g

        i_m, f_m, g_m, m_m = self.conv_m(m).chunk(4, dim=1)
        i_p = torch.sigmoid(ip_x + i_m)
        f_p = torch.sigmoid(fp_x + f_m + self._forget_bias)
        g_p = torch.tanh(gp_x + g_m)
        m_new = f_p * torch.tanh(m_m) + i_p * g_p

        o = torch.tanh(o_x + o_h + self.conv_oc(c_new) + self.conv_om(m_new))
        h_new = torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1))) * torch.sigmoid(o)
        return h_new, c_new, m_new


@register_model("e3d_lstm")
class E3DLSTM(Predictor):
    """E3D-LSTM: stacked Eidetic 3D LSTM layers (:class:`Eidetic3DLSTMCell`) over a sliding window of inputs.

    Paper: Yunbo Wang, Lu Jiang, Ming-Hsuan Yang, Li-Jia Li, Mingsheng Long, Li Fei-Fei, "Eidetic 3D LSTM: A
    Model for Video Prediction and Beyond", ICLR 2019, https://openreview.net/forum?id=B1lKS2AqtX.
    Code: official TensorFlow implementation https://github.com/google/e3d_lstm; this follows OpenSTL's
    PyTorch port https://github.com/chengtan9907/OpenSTL (``openstl/models/e3dlstm_model.py``,
    ``openstl/modules/e3dlstm_modules.py``), framecast's golden reference.

    Shapes: ``context (B, T_ctx, C, H, W)`` -> ``prediction (B, horizon, C, H, W)`` through the shared rollout
    (:meth:`framecast.models.Predictor.rollout`).

    The rollout feeds one frame per step; the model keeps the last ``w - 1`` inputs in its state, and at step
    ``t`` the bottom layer reads the window ``X_t = [x_{t-w+1}, ..., x_t]`` ``(B, C*p*p, w, H/p, W/p)``
    (zeros before the first frame, as the official code's zero-padded input list), so every layer's state
    is a window ``(B, hidden, w, H/p, W/p)``. Per step, as PredRNN's zig-zag::

        h^l_t, c^l_t, M^l_t = E3D-LSTM_l(h^{l-1}_t, h^l_{t-1}, c^l_{t-1}, M^{l-1}_t, [c^l_{t-R}, ..., c^l_{t-1}])
        M^{-1}_t := M^{L-1}_{t-1},  h^{-1}_t := X_t
        y_t = head(W_out * h^{L-1}_t)          (W_out: a w x 1 x 1 convolution, ``readout``)

    The eidetic memories of layer ``l`` are its last ``R = recall_length`` memories ``c`` (all of them by
    default, as the official code: the zero initial memory first, so the attention at step ``t`` reads
    ``t + 1`` memories). The official ``conv_last`` (a ``w x 1 x 1`` convolution straight to the frame's
    ``C*p*p`` channels) is here ``readout`` (``w x 1 x 1``, ``hidden -> hidden``, no bias) followed by the
    shared head (a 1x1 convolution), so both heads work; :func:`load_openstl_state_dict` puts the official
    ``conv_last`` in ``readout`` and an identity in the head.

    framecast differs from OpenSTL's port in two ways, both fixes (``tests/test_zoo_e3d_lstm.py`` shows the
    outputs differ by exactly them):

    * the memory ``M`` flows. The official cell (and OpenSTL's) returns the ``M`` it was given, not ``M'``,
      so ``M`` stays zero for ever and ``conv_m`` (the ``W_m.``) never gets a gradient in OpenSTL (it has no
      bias); the paper's ``M`` goes up the stack and from the top to the bottom layer at the next step.
    * the recall attention flattens ``(B, C, w, H, W)`` to ``(B, w*H*W, C)`` (positions by channels), as the
      official ``_attn`` on its channels-last tensors. OpenSTL's ``_attn`` reshapes its channels-first
      tensors to ``(B, -1, C)`` without moving the channels last, which mixes channels and positions.

    Kept from OpenSTL: its ``tf_Conv3d`` (:class:`WindowConv3d`: "valid" in time, then repeated), where the
    TensorFlow code pads "same" in time (zero after the window's last slice); no biases by default in
    OpenSTL, one in the gates and the head here (``bias``). The layer norms are ``GroupNorm(1, C)``: the
    same normalisation as OpenSTL's ``nn.LayerNorm([C, w, H, W])``, with a per-channel affine (as the
    TensorFlow ``layer_norm``), so the model is not tied to one frame size. OpenSTL's and the official
    ``window_stride`` (the window advances every ``w - stride`` steps; only ``stride = w - 1``, a new window
    every step, runs in OpenSTL) is fixed at that: every step reads the last ``w`` inputs.

    Args:
        window_length: ``w``, the inputs per step (official 2). The context must have at least ``w`` frames
            (else ``ValueError`` naming ``model.model_options.window_length``).
        recall_length: ``R``, the eidetic memories the recall gate attends over; ``None`` (default): all
            since the start, as the official code (the attention then grows with the rollout).
        temporal_kernel: the convolutions' kernel in time (official 2), ``1 <= temporal_kernel <= w``.
        layer_norm: normalise the outputs of the window convolutions (official ``--layer_norm``; OpenSTL's
            Moving MNIST config has 0).
        bias: give the gates (``conv_x``) and the head a bias; ``bias: false`` is OpenSTL's layout (which
            :func:`load_openstl_state_dict` needs). Default True.
        **kwargs: the options of :class:`framecast.models.base.Predictor` (``kernel_size`` is the spatial
            kernel of the window convolutions, official 5).

    Input ``context (B, T_ctx >= w, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``. The state is
    ``(window (B, C*p*p, w-1, H/p, W/p), h, c, history, M)``: ``h, c`` lists of ``(B, hidden[l], w, H/p, W/p)``,
    ``history`` a list of ``(B, hidden[l], n*w, H/p, W/p)`` (``n <= R`` past memories), ``M`` the top
    layer's ``(B, hidden[-1], w, H/p, W/p)``. Layers of unequal ``hidden`` sizes: ``M`` goes through a
    bias-free 1x1x1 convolution (``m_in[l]``) into a layer of another size (an extension; the official code
    needs equal sizes).
    """

    def __init__(
        self,
        window_length: int = 2,
        recall_length: int | None = None,
        temporal_kernel: int = 2,
        layer_norm: bool = False,
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if window_length < 1:
            raise ValueError(f"model.model_options.window_length must be >= 1, got {window_length}")
        if recall_length is not None and recall_length < 1:
            raise ValueError(f"model.model_options.recall_length must be >= 1 or null, got {recall_length}")
        if not 1 <= temporal_kernel <= window_length:
            raise ValueError(
                f"model.model_options.temporal_kernel must be between 1 and window_length ({window_length}), "
                f"got {temporal_kernel}"
            )
        self.window_length = window_length
        self.recall_length = recall_length
        self.temporal_kernel = temporal_kernel
        self.layer_norm = layer_norm
        self.bias = bias
        ins = [self.in_channels] + self.hidden[:-1]
        self.cells = nn.ModuleList(
            Eidetic3DLSTMCell(i, h, self.kernel_size, temporal_kernel, layer_norm, bias)
            for i, h in zip(ins, self.hidden)
        )
        m_src = [self.hidden[-1]] + self.hidden[:-1]
        self.m_in = nn.ModuleList(
            nn.Identity() if s == h else nn.Conv3d(s, h, 1, bias=False) for s, h in zip(m_src, self.hidden)
        )
        self.readout = nn.Conv3d(self.hidden[-1], self.hidden[-1], (window_length, 1, 1), bias=False)
        if not bias and getattr(self.head, "conv", None) is not None:
            self.head.conv.register_parameter("bias", None)  # OpenSTL's conv_last has no bias

    def check_input(self, context: Tensor) -> None:
        super().check_input(context)
        if context.shape[1] < self.window_length:
            raise ValueError(
                f"model.model_options.window_length is {self.window_length}: e3d_lstm needs a context of at "
                f"least {self.window_length} frames (data.context_frames), got {context.shape[1]}"
            )

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        w = self.window_length
        window = like.new_zeros(batch, self.in_channels, w - 1, height, width)
        hs = [like.new_zeros(batch, n, w, height, width) for n in self.hidden]
        cs = [like.new_zeros(batch, n, w, height, width) for n in self.hidden]
        history = [like.new_zeros(batch, n, 0, height, width) for n in self.hidden]
        m = like.new_zeros(batch, self.hidden[-1], w, height, width)
        return window, hs, cs, history, m

    def step(self, x: Tensor, state):
        window, hs, cs, history, m = state
        inp = torch.cat([window, x.unsqueeze(2)], dim=2)  # (B, C*p*p, w, H, W), oldest first
        keep = None if self.recall_length is None else self.recall_length * self.window_length
        new_h, new_c, new_hist = [], [], []
        layer_in = inp
        for cell, m_in, h, c, hist in zip(self.cells, self.m_in, hs, cs, history):
            hist = torch.cat([hist, c], dim=2)
            if keep is not None and hist.shape[2] > keep:
                hist = hist[:, :, -keep:]
            h, c, m = cell(layer_in, h, c, m_in(m), hist)
            layer_in = h
            new_h.append(h)
            new_c.append(c)
            new_hist.append(hist)
        feat = self.readout(new_h[-1]).squeeze(2)
        return feat, (inp[:, :, 1:], new_h, new_c, new_hist, m), 0.0


def _strip_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    sd = sd.get("state_dict", sd)
    if sd and all(k.startswith("model.") for k in sd):  # OpenSTL's method module holds the net as .model
        sd = {k[len("model.") :]: v for k, v in sd.items()}
    return dict(sd)


def _per_channel(key: str, value: Tensor, what: str) -> Tensor:
    """An OpenSTL ``LayerNorm([C, ...])`` affine ``(C, ...)`` as framecast's per-channel ``(C,)``."""
    flat = value.flatten(1)
    if not torch.equal(flat, flat[:, :1].expand_as(flat)):
        raise ValueError(
            f"load_openstl_state_dict: the LayerNorm affine {key} varies over {what}; framecast's layer norm "
            "has one per channel (GroupNorm), so these weights have no equivalent"
        )
    return flat[:, 0].clone()


def load_openstl_state_dict(model: E3DLSTM, state_dict: Mapping[str, Tensor]) -> None:
    """Load the weights of an OpenSTL ``E3DLSTM_Model`` into ``model``, in place.

    ``state_dict``: ``E3DLSTM_Model.state_dict()`` (or OpenSTL's method checkpoint, keys ``model.*``,
    optionally under ``"state_dict"``). The names map as ``cell_list.<l>.<conv>.0.conv3d`` ->
    ``cells.<l>.<conv>.conv`` (``conv_gm`` -> ``conv_m``, ``conv_new_cell`` -> ``conv_oc``, ``conv_new_gm``
    -> ``conv_om``), ``<conv>.1`` (the LayerNorm) -> ``<conv>.norm``, ``_norm_c_t`` -> ``norm_c``,
    ``cell_list.<l>.conv_last.conv3d`` -> ``cells.<l>.conv_last``. The official ``conv_last`` (``w x 1 x 1``,
    ``hidden -> C*p*p``) becomes the first ``C*p*p`` output channels of ``readout`` (the others zero) and the
    head an identity on them; that needs ``C*p*p <= hidden[-1]``. Converted as
    :func:`framecast.models.predrnn.load_official_state_dict`: the patch channels (``(dy, dx, c)`` ->
    ``(c, dy, dx)``) and the ``LayerNorm([C, w, H, W])`` affines, which must be the same over ``(w, H, W)``
    (they are at initialisation; else ``ValueError``).

    ``model`` must have OpenSTL's architecture: equal ``hidden`` sizes, ``bias: false``, the deterministic
    head, no ``residual``, ``temporal_kernel`` and ``window_length`` as the weights' and ``layer_norm`` as
    OpenSTL's ``layer_norm``; otherwise ``ValueError`` names the option. The rollout then equals OpenSTL's with
    the memory and attention fixes (see :class:`E3DLSTM`).
    """
    if not isinstance(model, E3DLSTM):
        raise TypeError(f"load_openstl_state_dict needs an E3DLSTM, got {type(model).__name__}")
    sd = _strip_prefix(state_dict)
    problems = []
    if model.bias:
        problems.append("model_options.bias must be false (OpenSTL's convolutions have no bias)")
    if len(set(model.hidden)) > 1:
        problems.append(f"hidden sizes must be equal (OpenSTL's memory needs it), got {model.hidden}")
    if not isinstance(model.head, DeterministicHead) or model.residual:
        problems.append("OpenSTL's network needs head: deterministic and residual: false")
    c, p = model.channels, model.patch_size
    frame_ch = c * p * p
    if frame_ch > model.hidden[-1]:
        problems.append(f"the head needs C*p*p = {frame_ch} <= hidden[-1] = {model.hidden[-1]}")
    last = sd.get("conv_last.weight")
    if last is None:
        raise ValueError("load_openstl_state_dict: no conv_last.weight: not an OpenSTL E3DLSTM_Model state dict")
    if last.shape[2] != model.window_length:
        problems.append(f"model_options.window_length must be {last.shape[2]}, as the weights")
    kt = sd["cell_list.0.conv_x.0.conv3d.weight"].shape[2]
    if kt != model.temporal_kernel:
        problems.append(f"model_options.temporal_kernel must be {kt}, as the weights")
    ln = any(k.startswith("cell_list.") and ".conv_x.1." in k for k in sd)
    if ln != model.layer_norm:
        problems.append(f"model_options.layer_norm must be {str(ln).lower()}, as the weights")
    if problems:
        raise ValueError("load_openstl_state_dict: " + "; ".join(problems))

    perm = patch_permutation(c, p)
    names = {"conv_x": "conv_x", "conv_h": "conv_h", "conv_gm": "conv_m", "conv_new_cell": "conv_oc",
             "conv_new_gm": "conv_om"}
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key == "conv_last.weight":
            readout = value.new_zeros(model.readout.weight.shape)
            readout[:frame_ch] = value[perm]
            out["readout.weight"] = readout
            out["head.conv.weight"] = torch.eye(frame_ch, model.hidden[-1]).view(frame_ch, -1, 1, 1)
        elif parts[0] == "cell_list" and parts[2] == "_norm_c_t":
            out[f"cells.{parts[1]}.norm_c.{parts[3]}"] = _per_channel(key, value, "(w, H, W)")
        elif parts[0] == "cell_list" and parts[2] == "conv_last":
            out[f"cells.{parts[1]}.conv_last.{parts[-1]}"] = value
        elif parts[0] == "cell_list" and parts[2] in names:
            target = f"cells.{parts[1]}.{names[parts[2]]}"
            if parts[3] == "0":
                if parts[2] == "conv_x" and parts[1] == "0":
                    value = value[:, perm]
                out[f"{target}.conv.{parts[-1]}"] = value
            else:
                out[f"{target}.norm.{parts[-1]}"] = _per_channel(key, value, "(w, H, W)")
        else:
            raise ValueError(f"load_openstl_state_dict: unexpected OpenSTL weight {key!r}")
    model.load_state_dict(out, strict=True)
