"""SimVP: a convolutional encoder, a temporal translator and a decoder, mapping a window of frames in one pass.

Gao, Tan, Wu, Li, "SimVP: Simpler yet Better Video Prediction", CVPR 2022, https://arxiv.org/abs/2206.05099
(v1, the ``incepu`` translator; official code https://github.com/A4Bio/SimVP), and Tan, Gao, Li, Li, "SimVP:
Towards Simple yet Powerful Spatiotemporal Predictive Learning", arXiv 2211.12509, 2022 (v2, the gated
spatiotemporal attention ``gsta`` translator; official code https://github.com/chengtan9907/SimVPv2). Written
after OpenSTL's implementation of both, https://github.com/chengtan9907/OpenSTL (``openstl/models/simvp_model.py``,
``openstl/modules/simvp_modules.py``, ``openstl/modules/layers/van.py``), which the golden tests compare with.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from framecast.models.registry import register_model
from framecast.models.translators import GatedAttention, IncepUTranslator, MetaTranslator, TemporalAttention
from framecast.models.window import WindowPredictor


class ConvSC(nn.Module):
    """``SiLU(GroupNorm_2(conv(x)))``; the convolution has stride 2 (``down``) or is followed by a 2x
    depth-to-space (``up``, ``4 out`` channels first). OpenSTL ``ConvSC`` / ``BasicConv2d``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, down: bool = False, up: bool = False):
        super().__init__()
        stride = 2 if down else 1
        padding = (kernel_size - stride + 1) // 2
        if up:
            self.conv = nn.Sequential(nn.Conv2d(c_in, 4 * c_out, kernel_size, padding=padding), nn.PixelShuffle(2))
        else:
            self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding)
        self.norm = nn.GroupNorm(2, c_out)
        self.act = nn.SiLU()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


def _samplings(layers: int) -> list[bool]:
    """Which encoder layers halve the size: every second one, from the second (OpenSTL ``sampling_generator``)."""
    return [i % 2 == 1 for i in range(layers)]


class Encoder(nn.Module):
    """``layers`` :class:`ConvSC`, every second one strided: ``(N, C_in, H, W)`` -> latent ``(N, F, H/2^(L/2),
    W/2^(L/2))`` and the first layer's output ``(N, F, H, W)`` (the decoder's skip)."""

    def __init__(self, c_in: int, features: int, layers: int, kernel_size: int):
        super().__init__()
        self.enc = nn.ModuleList(
            ConvSC(c_in if i == 0 else features, features, kernel_size, down=s) for i, s in enumerate(_samplings(layers))
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = latent = self.enc[0](x)
        for layer in self.enc[1:]:
            latent = layer(latent)
        return latent, skip


class Decoder(nn.Module):
    """The mirror of :class:`Encoder` (depth-to-space where it strided); the last layer reads ``latent + skip``.
    Returns its features ``(N, F, H, W)``: the head (OpenSTL's ``readout``, a 1x1 convolution) reads them."""

    def __init__(self, features: int, layers: int, kernel_size: int):
        super().__init__()
        self.dec = nn.ModuleList(ConvSC(features, features, kernel_size, up=s) for s in reversed(_samplings(layers)))

    def forward(self, hid: Tensor, skip: Tensor) -> Tensor:
        for layer in self.dec[:-1]:
            hid = layer(hid)
        return self.dec[-1](hid + skip)


@register_model("simvp")
class SimVP(WindowPredictor):
    """SimVP: encode every frame, translate the whole window at once, decode every frame.

    Paper: Zhangyang Gao, Cheng Tan, Lirong Wu, Stan Z. Li, "SimVP: Simpler yet Better Video Prediction", CVPR
    2022 (https://arxiv.org/abs/2206.05099), and Cheng Tan, Zhangyang Gao, Siyuan Li, Stan Z. Li, "SimVP: Towards
    Simple yet Powerful Spatiotemporal Predictive Learning", 2022 (https://arxiv.org/abs/2211.12509).
    Code: https://github.com/A4Bio/SimVP (v1) and https://github.com/chengtan9907/SimVPv2 (v2); also in OpenSTL,
    https://github.com/chengtan9907/OpenSTL (``openstl/models/simvp_model.py``), which framecast follows.

    ``model(context, horizon)``: ``context (B, T_ctx, C, H, W)`` with ``T_ctx = context`` -> ``(B, horizon, C, H, W)``.

    With ``x (B, T, C*p*p, H/p, W/p)`` the window (``T = context``), ``F = hidden[0]`` (OpenSTL ``hid_S``),
    ``L = spatial_layers`` (``N_S``)::

        z_t, s_t = Enc(x_t)                       (per frame; z_t (F, h, w), h = H / (p 2^(L/2)), skip s_t at H/p)
        Z' = Translator([z_1 .. z_T])             ((B, T*F, h, w) -> (B, T*F, h, w): time as channels)
        d_t = Dec(Z'_t, s_t)                      (per output frame, (F, H/p, W/p))
        y_{T+t} = head(d_t, x_T)                  (OpenSTL's readout: the 1x1 convolution of the head)

    ``translator``: ``gsta`` (v2, :class:`MetaTranslator` of gated attention blocks), ``incepu`` (v1,
    :class:`IncepUTranslator`) or ``tau`` (TAU's blocks without its loss; the ``tau`` model adds it), each with ``temporal_layers`` blocks of ``hidden[1]`` channels (``N_T``,
    ``hid_T``). The output window has ``T`` frames; ``rollout`` (:class:`~framecast.models.window.WindowPredictor`)
    keeps the first ``horizon`` of them or feeds predicted windows back for a longer horizon.

    Args:
        hidden: ``[spatial, temporal]`` channels, OpenSTL ``[hid_S, hid_T]`` (``[64, 512]`` on Moving MNIST).
        kernel_size: the encoder's and decoder's kernel (``spatio_kernel_enc``, ``spatio_kernel_dec``).
        context: the window ``T`` (``pre_seq_length``; ``aft_seq_length`` is the same).
        translator: ``gsta`` (SimVP v2), ``incepu`` (v1) or ``tau`` (:class:`framecast.models.tau.TAU`'s blocks).
        spatial_layers: encoder and decoder layers ``N_S`` (even: every second one halves the size).
        temporal_layers: translator blocks ``N_T`` (>= 2).
        mlp_ratio: gSTA's feed-forward expansion (OpenSTL default 8).
        drop, drop_path: gSTA's dropout and stochastic depth.
        incep_kernels, groups: the inception branches' kernels and groups (v1: ``[3, 5, 7, 11]``, 8).

    Shapes: ``predict_window`` maps ``(B, T, C*p*p, H/p, W/p)`` to decoder features ``(B, T, F, H/p, W/p)``
    and translator features ``(B, T, F, h, w)`` (the hidden-state view). ``H/p`` and ``W/p`` must be
    divisible by ``2^(L/2)``.
    """

    def __init__(
        self,
        translator: Literal["gsta", "incepu", "tau"] = "gsta",
        spatial_layers: int = 4,
        temporal_layers: int = 8,
        mlp_ratio: float = 8.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        incep_kernels: list[int] = [3, 5, 7, 11],  # noqa: B006  (read, never changed)
        groups: int = 8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__.lower()
        if len(self.hidden) != 2:
            raise ValueError(f"model.hidden: {name} takes [spatial, temporal] channels (OpenSTL hid_S, hid_T), "
                             f"got {self.hidden}")
        if translator not in ("gsta", "incepu", "tau"):
            raise ValueError(f"model.model_options.translator must be 'gsta', 'incepu' or 'tau', got {translator!r}")
        if spatial_layers < 2 or spatial_layers % 2:
            raise ValueError(f"model.model_options.spatial_layers must be an even int >= 2, got {spatial_layers}")
        if temporal_layers < 2:
            raise ValueError(f"model.model_options.temporal_layers must be >= 2, got {temporal_layers}")
        if self.hidden[0] % 2:
            raise ValueError(f"model.hidden[0] must be even (the encoder's GroupNorm has 2 groups), got {self.hidden}")
        if not 0 <= drop < 1 or not 0 <= drop_path < 1:
            raise ValueError(f"model.model_options.drop and drop_path must be in [0, 1), got {drop}, {drop_path}")
        if not mlp_ratio > 0:
            raise ValueError(f"model.model_options.mlp_ratio must be > 0, got {mlp_ratio}")
        self.translator_kind = translator
        self.spatial_layers = spatial_layers
        s, t = self.hidden
        self.enc = Encoder(self.in_channels, s, spatial_layers, self.kernel_size)
        self.dec = Decoder(s, spatial_layers, self.kernel_size)
        c_in = self.context * s
        if translator == "incepu":
            g = groups if groups > 0 and (t // 2) % groups == 0 else 1
            if t < 2 or t % g or c_in % g:
                raise ValueError(f"model.hidden[1] must be >= 2 and, with its half divisible by "
                                 f"model.model_options.groups {groups}, hidden[1] and context x hidden[0] too; "
                                 f"got hidden {self.hidden}, context {self.context}")
            self.hid = IncepUTranslator(c_in, t, temporal_layers, list(incep_kernels), groups)
        else:
            self.hid = MetaTranslator(c_in, t, temporal_layers, self.attention, mlp_ratio, drop, drop_path)

    def attention(self, dim: int) -> nn.Module:
        """A translator block's attention on ``dim`` channels: gSTA's or TAU's."""
        return TemporalAttention(dim) if self.translator_kind == "tau" else GatedAttention(dim)

    def check_input(self, context: Tensor) -> None:
        super().check_input(context)
        f = self.patch_size * 2 ** (self.spatial_layers // 2)
        h, w = context.shape[-2:]
        if h % f or w % f:
            raise ValueError(f"frame size {h}x{w} is not divisible by patch_size x 2^(spatial_layers/2) = "
                             f"{self.patch_size} x {f // self.patch_size}")

    def encode(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        z, _ = self.enc(x.flatten(0, 1))
        return z.view(b, t, *z.shape[1:])

    def predict_window(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, t = x.shape[:2]
        z, skip = self.enc(x.flatten(0, 1))
        f, h, w = z.shape[1:]
        hid = self.hid(z.reshape(b, t * f, h, w)).reshape(b * t, f, h, w)
        out = self.dec(hid, skip)
        return out.view(b, t, *out.shape[1:]), hid.view(b, t, f, h, w)


_OFFICIAL_NAMES = [  # OpenSTL's SimVP_Model parameter names -> framecast's (applied in order)
    (r"^(enc\.enc|dec\.dec)\.(\d+)\.conv\.conv\.", r"\1.\2.conv."),
    (r"^(enc\.enc|dec\.dec)\.(\d+)\.conv\.norm\.", r"\1.\2.norm."),
    (r"^dec\.readout\.", "head.conv."),
    (r"^hid\.(enc|dec)\.(\d+)\.layers\.(\d+)\.conv\.", r"hid.\1.\2.branches.\3.0."),
    (r"^hid\.(enc|dec)\.(\d+)\.layers\.(\d+)\.norm\.", r"hid.\1.\2.branches.\3.1."),
    (r"\.block\.attn\.spatial_gating_unit\.", ".attn."),
    (r"\.block\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"\.block\.", "."),
]


def load_official_state_dict(model: SimVP, state_dict) -> SimVP:
    """Load the weights of OpenSTL's ``SimVP_Model`` (``openstl/models/simvp_model.py``; a method checkpoint's
    ``state_dict`` with its ``model.`` prefix too) into ``model``, in place. Needs what OpenSTL's network is:
    ``head: deterministic`` (its ``readout``), no ``residual``, ``patch_size: 1``; ``ValueError`` otherwise,
    and ``load_state_dict``'s (strict) error where the sizes or the translator differ."""
    import re

    from framecast.models.heads import DeterministicHead

    if not isinstance(model.head, DeterministicHead) or model.residual or model.patch_size != 1:
        raise ValueError("load_official_state_dict: OpenSTL's SimVP needs head: deterministic, residual: false and "
                         "patch_size: 1")
    sd = state_dict.get("state_dict", state_dict)
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("model.")
        for pattern, repl in _OFFICIAL_NAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    model.load_state_dict(out)
    return model
