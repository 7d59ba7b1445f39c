"""PredRNN and PredRNN-v2: stacked spatiotemporal LSTMs with a zig-zag spatiotemporal memory.

* Wang, Long, Wang, Gao, Yu, "PredRNN: Recurrent Neural Networks for Predictive Learning using
  Spatiotemporal LSTMs", NeurIPS 2017.
  https://papers.nips.cc/paper/2017/hash/e5f6ad6ce374177eef023bf5d0c018b6-Abstract.html
* Wang, Wu, Zhang, Gao, Wang, Yu, Long, "PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive
  Learning", TPAMI 2022. https://arxiv.org/abs/2103.09504

Written after the official implementation, https://github.com/thuml/predrnn-pytorch
(``core/layers/SpatioTemporalLSTMCell*.py``, ``core/models/predrnn.py``, ``core/models/predrnn_v2.py``).
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


def _conv(in_ch: int, out_ch: int, kernel_size: int, layer_norm: bool, bias: bool) -> nn.Module:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)
    if not layer_norm:
        return conv
    # GroupNorm with one group normalises each sample over (C, H, W), as the official
    # nn.LayerNorm([C, H, W]) does, but its affine is per channel, so the model is not tied to one frame size.
    return nn.Sequential(conv, nn.GroupNorm(1, out_ch))


class SpatioTemporalLSTMCell(nn.Module):
    """One spatiotemporal LSTM (ST-LSTM) layer (PredRNN, Wang et al. 2017).

    With ``*`` a convolution, ``o`` the Hadamard product, ``x`` the layer input, ``h, c`` this layer's
    hidden state and temporal memory from the previous time step and ``m`` the spatiotemporal memory
    arriving from the layer below (or from the top layer at the previous step)::

        g  = tanh   (W_xg * x + W_hg * h + b_g)
        i  = sigmoid(W_xi * x + W_hi * h + b_i)
        f  = sigmoid(W_xf * x + W_hf * h + b_f + 1)            (forget bias 1.0, ``_forget_bias``)
        c' = f o c + i o g                                      (delta_c = i o g)
        g' = tanh   (W'_xg * x + W_mg * m + b'_g)
        i' = sigmoid(W'_xi * x + W_mi * m + b'_i)
        f' = sigmoid(W'_xf * x + W_mf * m + b'_f + 1)
        m' = f' o m + i' o g'                                   (delta_m = i' o g')
        o  = sigmoid(W_xo * x + W_ho * h + W_co * c' + W_mo * m' + b_o)
        h' = o o tanh(W_1x1 * [c', m'])

    As in the official code, ``conv_x`` (``x -> 7 hidden``: i, f, g, i', f', g', o), ``conv_h``
    (``h -> 4 hidden``: i, f, g, o), ``conv_m`` (``m -> 3 hidden``: i', f', g'), ``conv_o``
    (``[c', m'] -> hidden``) and the 1x1 ``conv_last`` (``[c', m'] -> hidden``, no bias) compute the
    terms. The biases ``b`` are ``conv_x``'s (the other convolutions have none, as they would only
    duplicate them). ``bias=False`` drops them too: the official code has no bias in any convolution
    (so its gates have none, apart from the forget bias 1.0).

    ``layer_norm``: normalise the output of ``conv_x``, ``conv_h``, ``conv_m`` and ``conv_o`` over
    ``(C, H, W)`` (the official code's ``--layer_norm``; the paper does not mention it, and the official
    training scripts set it to 0). With it, ``conv_x`` has no bias either (the norm's shift replaces it).

    Shapes: ``x (B, C_in, H, W)``, ``h, c, m (B, hidden, H, W)``; returns ``h', c', m', delta_c, delta_m``,
    each ``(B, hidden, H, W)``.
    """

    _forget_bias = 1.0

    def __init__(
        self, in_channels: int, hidden: int, kernel_size: int, layer_norm: bool = False, bias: bool = True
    ):
        super().__init__()
        self.hidden = hidden
        self.conv_x = _conv(in_channels, 7 * hidden, kernel_size, layer_norm, bias=bias and not layer_norm)
        self.conv_h = _conv(hidden, 4 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_m = _conv(hidden, 3 * hidden, kernel_size, layer_norm, bias=False)
        self.conv_o = _conv(2 * hidden, hidden, kernel_size, layer_norm, bias=False)
        self.conv_last = nn.Conv2d(2 * hidden, hidden, 1, bias=False)

    def forward(
        self, x: Tensor, h: Tensor, c: Tensor, m: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = self.conv_x(x).chunk(7, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(h).chunk(4, dim=1)
        i_m, f_m, g_m = self.conv_m(m).chunk(3, dim=1)

        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h + self._forget_bias)
        g = torch.tanh(g_x + g_h)
        delta_c = i * g
        c_new = f * c + delta_c

        i_p = torch.sigmoid(i_xp + i_m)
        f_p = torch.sigmoid(f_xp + f_m + self._forget_bias)
        g_p = torch.tanh(g_xp + g_m)
        delta_m = i_p * g_p
        m_new = f_p * m + delta_m

        mem = torch.cat([c_new, m_new], dim=1)
        o = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m


@register_model("predrnn")
class PredRNN(Predictor):
    """PredRNN: stacked ST-LSTM layers (:class:`SpatioTemporalLSTMCell`) with a zig-zag spatiotemporal memory.

    Paper: Yunbo Wang, Mingsheng Long, Jianmin Wang, Zhifeng Gao, Philip S. Yu, "PredRNN: Recurrent Neural
    Networks for Predictive Learning using Spatiotemporal LSTMs", NeurIPS 2017,
    https://papers.nips.cc/paper/2017/hash/e5f6ad6ce374177eef023bf5d0c018b6-Abstract.html (no arXiv
    version; its journal extension is https://arxiv.org/abs/2103.09504, see :class:`PredRNNv2`).
    Code: official PyTorch implementation https://github.com/thuml/predrnn-pytorch
    (``core/models/predrnn.py``).

    At time step ``t`` layer ``l`` reads ``x = h^{l-1}_t`` (layer 0 the patched frame), its own
    ``h^l_{t-1}, c^l_{t-1}``, and the spatiotemporal memory ``M``: from layer ``l-1`` at the same step,
    and for layer 0 from the top layer at step ``t-1``::

        h^l_t, c^l_t, M^l_t = ST-LSTM_l(h^{l-1}_t, h^l_{t-1}, c^l_{t-1}, M^{l-1}_t),   M^{-1}_t := M^{L-1}_{t-1}

    so ``M`` climbs the stack within a step and goes from the top back to the bottom between steps
    (``M`` starts at zero). The paper (and the official code) needs equal ``hidden`` sizes for that; where
    sizes differ, ``M`` goes through a bias-free 1x1 convolution (``m_in[l]``) on its way into a layer of
    another size (an extension; with equal sizes there is none).

    Args:
        layer_norm: normalise the gate convolutions over ``(C, H, W)`` (see
            :class:`SpatioTemporalLSTMCell`); default False, as in the official training scripts.
        bias: give the gates (``conv_x``) and the output head's 1x1 convolution a bias. The official code
            has none (all its convolutions are ``bias=False``): ``bias: false`` is the faithful setting
            (:func:`load_official_state_dict` needs it). Default True, framecast's original layout.
        **kwargs: the options of :class:`framecast.models.base.Predictor`.

    Input ``context (B, T_ctx, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``. The state is
    ``(h, c, m)``: lists of ``(B, hidden[l], H/p, W/p)`` per layer and the top layer's
    ``M (B, hidden[-1], H/p, W/p)``.
    """

    def __init__(self, layer_norm: bool = False, bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.layer_norm = layer_norm
        self.bias = bias
        ins = [self.in_channels] + self.hidden[:-1]
        self.cells = nn.ModuleList(
            SpatioTemporalLSTMCell(i, h, self.kernel_size, layer_norm, bias) for i, h in zip(ins, self.hidden)
        )
        if not bias and getattr(self.head, "conv", None) is not None:
            self.head.conv.register_parameter("bias", None)  # the official conv_last has no bias
        m_src = [self.hidden[-1]] + self.hidden[:-1]  # where each layer's M comes from
        self.m_in = nn.ModuleList(
            nn.Identity() if s == h else nn.Conv2d(s, h, 1, bias=False) for s, h in zip(m_src, self.hidden)
        )

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        hs = [like.new_zeros(batch, n, height, width) for n in self.hidden]
        cs = [like.new_zeros(batch, n, height, width) for n in self.hidden]
        m = like.new_zeros(batch, self.hidden[-1], height, width)
        return hs, cs, m

    def _layers(self, x: Tensor, state):
        """Run the stack once; yields per layer ``(h', c', m', delta_c, delta_m)``."""
        hs, cs, m = state
        for cell, m_in, h, c in zip(self.cells, self.m_in, hs, cs):
            out = cell(x, h, c, m_in(m))
            x, m = out[0], out[2]
            yield out

    def step(self, x: Tensor, state):
        outs = list(self._layers(x, state))
        hs = [o[0] for o in outs]
        cs = [o[1] for o in outs]
        return hs[-1], (hs, cs, outs[-1][2]), 0.0


@register_model("predrnn_v2")
class PredRNNv2(PredRNN):
    """PredRNN-v2: PredRNN with memory decoupling.

    Paper: Yunbo Wang, Haixu Wu, Jianjin Zhang, Zhifeng Gao, Jianmin Wang, Philip S. Yu, Mingsheng Long,
    "PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive Learning", IEEE TPAMI 2022,
    https://arxiv.org/abs/2103.09504.
    Code: official PyTorch implementation https://github.com/thuml/predrnn-pytorch
    (``core/models/predrnn_v2.py``).

    The increments of the two memories of every ST-LSTM layer, ``delta_c = i o g`` and
    ``delta_m = i' o g'`` (``(B, hidden, H, W)``), go through one bias-free 1x1 convolution per layer
    shared by both (``adapters[l]``), are flattened over space and L2-normalised, and the decoupling loss
    pushes them apart::

        D^l_t = mean over (B, hidden) of | cos( adapter_l(delta_c^l_t), adapter_l(delta_m^l_t) ) |
        aux   = decouple_weight * mean over layers l and steps t of D^l_t

    (cosine over the flattened ``H x W``, as the official ``torch.cosine_similarity(.., dim=2)``).
    :meth:`step` returns ``decouple_weight * mean_l D^l_t``; the base class averages it over the steps.
    The official code shares one adapter across all layers (which forces equal ``hidden`` sizes):
    ``shared_adapter: true``; by default each layer has its own.

    Reverse scheduled sampling, the paper's other change, is a training schedule: it is the
    ``teacher_mask`` of :meth:`Predictor.rollout` (see ``framecast.schedules``), not part of the model.

    Args:
        decouple_weight: the weight ``beta`` of the decoupling loss (official ``--decouple_beta``, 0.1).
            The loss is computed (and the adapters used) even at 0, so every parameter stays in the graph.
        shared_adapter: one adapter for every layer (``adapters`` then holds a single convolution), as
            the official ``self.adapter``; needs equal ``hidden`` sizes. Default False: one per layer.
        layer_norm, bias, **kwargs: as :class:`PredRNN`. The official configuration is
            ``shared_adapter: true, bias: false`` (see :func:`load_official_state_dict`).

    Shapes as :class:`PredRNN`: input ``context (B, T_ctx, C, H, W)`` -> prediction
    ``(B, horizon, C, H, W)``, the state ``(h, c, m)`` of ``(B, hidden[l], H/p, W/p)`` tensors; the
    rollout's ``aux_loss`` is a scalar.
    """

    def __init__(
        self,
        decouple_weight: float = 0.1,
        shared_adapter: bool = False,
        layer_norm: bool = False,
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(layer_norm=layer_norm, bias=bias, **kwargs)
        if decouple_weight < 0:
            raise ValueError(f"model decouple_weight must be >= 0, got {decouple_weight}")
        if shared_adapter and len(set(self.hidden)) > 1:
            raise ValueError(f"model shared_adapter needs equal hidden sizes, got {self.hidden}")
        self.decouple_weight = decouple_weight
        self.shared_adapter = shared_adapter
        sizes = self.hidden[:1] if shared_adapter else self.hidden
        self.adapters = nn.ModuleList(nn.Conv2d(n, n, 1, bias=False) for n in sizes)

    def step(self, x: Tensor, state):
        hs, cs, losses = [], [], []
        m = None
        adapters = [self.adapters[0]] * len(self.hidden) if self.shared_adapter else self.adapters
        for adapter, (h, c, m, delta_c, delta_m) in zip(adapters, self._layers(x, state)):
            hs.append(h)
            cs.append(c)
            dc = F.normalize(adapter(delta_c).flatten(2), dim=2)
            dm = F.normalize(adapter(delta_m).flatten(2), dim=2)
            losses.append(torch.abs(torch.cosine_similarity(dc, dm, dim=2)).mean())
        aux = self.decouple_weight * torch.stack(losses).mean()
        return hs[-1], (hs, cs, m), aux


def load_official_state_dict(model: PredRNN, state_dict: Mapping[str, Tensor]) -> None:
    """Load the weights of an official thuml/predrnn-pytorch network into ``model``, in place.

    ``state_dict``: the official ``RNN.state_dict()`` of ``core/models/predrnn.py`` or
    ``core/models/predrnn_v2.py``, or a checkpoint its ``Model.save`` wrote (``{"net_param": ...}``).
    The official names map as ``cell_list.<l>.conv_<x|h|m|o>.0`` -> ``cells.<l>.conv_<x|h|m|o>`` (``.0``
    with ``layer_norm``), ``cell_list.<l>.conv_last`` -> ``cells.<l>.conv_last``, ``conv_last`` ->
    ``head.conv``, ``adapter`` -> ``adapters.0``. Two layouts differ and are converted:

    * patch channels: the official ``reshape_patch`` orders a patch's channels as ``(dy, dx, c)``,
      ``pixel_unshuffle`` as ``(c, dy, dx)``; the bottom ``conv_x``'s inputs and the head's outputs are
      permuted (a no-op for one channel or ``patch_size`` 1);
    * layer norm: the official ``nn.LayerNorm([C, H, W])`` has an affine per element, framecast's
      ``GroupNorm(1, C)`` (the same normalisation) one per channel; an official affine that varies over
      space (after training it does) cannot be represented and raises ``ValueError``. At the official
      initialisation (ones and zeros) it maps exactly.

    ``model`` must have the official architecture: a ``predrnn``/``predrnn_v2`` with equal ``hidden``
    sizes, ``bias=False``, ``shared_adapter=True`` (v2), the deterministic head, no ``residual``, and
    ``layer_norm`` as the official ``--layer_norm``; otherwise ``ValueError`` names the option.
    The official rollout then equals :meth:`Predictor.rollout` with the same teacher forcing.
    """
    sd = state_dict.get("net_param", state_dict)
    problems = []
    if not isinstance(model, PredRNN):
        raise TypeError(f"load_official_state_dict needs a PredRNN or PredRNNv2, got {type(model).__name__}")
    if model.bias:
        problems.append("model_options.bias must be false (the official convolutions have no bias)")
    if len(set(model.hidden)) > 1:
        problems.append(f"hidden sizes must be equal (the official memory needs it), got {model.hidden}")
    if not isinstance(model.head, DeterministicHead) or model.residual:
        problems.append("the official network needs head: deterministic and residual: false")
    is_v2 = "adapter.weight" in sd
    if is_v2 != isinstance(model, PredRNNv2):
        problems.append(
            f"the official weights are {'predrnn_v2' if is_v2 else 'predrnn'}'s, "
            f"the model is {type(model).__name__}"
        )
    elif is_v2 and not model.shared_adapter:
        problems.append("model_options.shared_adapter must be true (the official v2 has one adapter)")
    official_ln = any(k.endswith(".1.weight") for k in sd if k.startswith("cell_list."))
    if official_ln != model.layer_norm:
        problems.append(
            f"model_options.layer_norm must be {str(official_ln).lower()}, as the official weights"
        )
    if problems:
        raise ValueError("load_official_state_dict: " + "; ".join(problems))

    c, p = model.channels, model.patch_size
    # framecast channel c*p*p + k (k = dy*p + dx) is official channel k*C + c
    perm = patch_permutation(c, p)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "conv_last":
            out["head.conv." + parts[1]] = value[perm]
        elif parts[0] == "adapter":
            out["adapters.0." + parts[1]] = value
        elif parts[0] == "cell_list" and parts[2] == "conv_last":
            out[f"cells.{parts[1]}.conv_last.{parts[3]}"] = value
        elif parts[0] == "cell_list" and len(parts) == 5 and parts[3] in ("0", "1"):
            layer, conv, index, name = parts[1], parts[2], parts[3], parts[4]
            if index == "1":  # the LayerNorm after the convolution
                flat = value.flatten(1)
                if not torch.equal(flat, flat[:, :1].expand_as(flat)):
                    raise ValueError(
                        f"load_official_state_dict: the LayerNorm affine {key} varies over space; framecast's "
                        "layer norm has one per channel (GroupNorm), so these weights have no equivalent"
                    )
                value = flat[:, 0]
            elif conv == "conv_x" and layer == "0":
                value = value[:, perm]
            target = (
                f"cells.{layer}.{conv}.{index}.{name}" if model.layer_norm else f"cells.{layer}.{conv}.{name}"
            )
            out[target] = value
        else:
            raise ValueError(f"load_official_state_dict: unexpected official weight {key!r}")
    model.load_state_dict(out, strict=True)
