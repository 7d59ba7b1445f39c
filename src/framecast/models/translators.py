"""The temporal translators of SimVP and TAU: on a window's encoded frames ``(B, T*F, h, w)``, time as channels.

SimVP v1's Inception U-Net (``incepu``), SimVP v2's gated spatiotemporal attention (``gsta``) and TAU's temporal
attention unit (``tau``), after OpenSTL, https://github.com/chengtan9907/OpenSTL (``openstl/models/simvp_model.py``
``MidIncepNet`` and ``MidMetaNet``, ``openstl/modules/simvp_modules.py``, ``openstl/modules/layers/van.py``).
Papers and equations: :class:`framecast.models.simvp.SimVP`, :class:`framecast.models.tau.TAU`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


# --- SimVP v1: the Inception U-Net translator ---------------------------------------------------------
class InceptionBlock(nn.Module):
    """``sum_k LeakyReLU_0.2(GroupNorm_g(GroupConv_k(conv1x1(x))))`` over the kernels ``k`` (OpenSTL
    ``gInception_ST``); ``g`` falls back to 1 where it does not divide the 1x1 convolution's channels."""

    def __init__(self, c_in: int, c_hid: int, c_out: int, kernels: list[int], groups: int):
        super().__init__()
        groups = groups if c_hid % groups == 0 else 1
        self.conv1 = nn.Conv2d(c_in, c_hid, 1)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_hid, c_out, k, padding=k // 2, groups=groups), nn.GroupNorm(groups, c_out),
                          nn.LeakyReLU(0.2))
            for k in kernels
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return sum(branch(x) for branch in self.branches)


class IncepUTranslator(nn.Module):
    """SimVP v1's translator (OpenSTL ``MidIncepNet``): ``layers`` inception blocks down to ``hid`` channels,
    then ``layers`` up, each reading the previous output concatenated with the matching down block's (a U-Net).
    ``(B, C_in, h, w)`` -> ``(B, C_in, h, w)``."""

    def __init__(self, c_in: int, hid: int, layers: int, kernels: list[int], groups: int):
        super().__init__()
        self.enc = nn.ModuleList(
            InceptionBlock(c_in if i == 0 else hid, hid // 2, hid, kernels, groups) for i in range(layers)
        )
        self.dec = nn.ModuleList(
            InceptionBlock(hid if i == 0 else 2 * hid, hid // 2, c_in if i == layers - 1 else hid, kernels, groups)
            for i in range(layers)
        )

    def forward(self, z: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            z = block(z)
            if i < len(self.enc) - 1:
                skips.append(z)
        z = self.dec[0](z)
        for block, skip in zip(self.dec[1:], reversed(skips)):
            z = block(torch.cat([z, skip], 1))
        return z


# --- SimVP v2: the gated spatiotemporal attention (gSTA) translator ------------------------------------
def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero a whole sample's branch with probability ``p`` in training, scale by ``1/(1-p)``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class GatedAttention(nn.Module):
    """The large-kernel gated attention of gSTA (OpenSTL ``SpatialAttention`` with ``AttentionModule``)::

        a = DWConv_{k/d, dilation d}(DWConv_{2d-1}(GELU(W_1 x)));   [f, g] = W_a a
        out = W_2 (sigmoid(g) o f) + x

    ``d = 3``, ``k`` the receptive field (21): depthwise kernels 5 and 7 (dilation 3)."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, gate_channels: int | None = None):
        super().__init__()
        d_k = 2 * dilation - 1
        dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=(d_k - 1) // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, dd_k, padding=dilation * (dd_k - 1) // 2, groups=dim,
                                      dilation=dilation)
        self.conv1 = nn.Conv2d(dim, 2 * dim if gate_channels is None else gate_channels, 1)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def attend(self, u: Tensor, attn: Tensor) -> Tensor:
        f, g = self.conv1(attn).chunk(2, dim=1)
        return torch.sigmoid(g) * f

    def forward(self, x: Tensor) -> Tensor:
        u = self.act(self.proj_1(x))
        attn = self.conv_spatial(self.conv0(u))
        return self.proj_2(self.attend(u, attn)) + x


class MixMlp(nn.Module):
    """The convolutional feed-forward of gSTA: ``W_2 GELU(DWConv_3(W_1 x))`` (OpenSTL ``MixMlp``)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class MetaBlock(nn.Module):
    """One translator block on ``(B, c_in, h, w)``, a MetaFormer with layer scales ``s_1, s_2`` (init 0.01)::

        x = x + s_1 o Attention(BN_1(x));   x = x + s_2 o MixMlp(BN_2(x));   out = W_r x  (1x1, where c_out != c_in)

    ``attention``: :class:`GatedAttention` (gSTA, OpenSTL ``GASubBlock``) or TAU's temporal attention
    (:class:`framecast.models.tau.TemporalAttention`, OpenSTL ``TAUSubBlock``)."""

    def __init__(self, c_in: int, c_out: int, attention: nn.Module, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.attn = attention
        self.norm2 = nn.BatchNorm2d(c_in)
        self.mlp = MixMlp(c_in, int(c_in * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((c_in,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((c_in,), 1e-2))
        self.drop_path = drop_path
        self.reduction = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        keep = set(attention.modules()) if getattr(attention, "default_init", False) else set()
        for m in self.modules():
            if m in keep:
                continue
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = x + drop_path(self.layer_scale_1.view(1, -1, 1, 1) * self.attn(self.norm1(x)), self.drop_path, self.training)
        x = x + drop_path(self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(self.norm2(x)), self.drop_path, self.training)
        return x if self.reduction is None else self.reduction(x)


class MetaTranslator(nn.Module):
    """``layers`` :class:`MetaBlock` (OpenSTL ``MidMetaNet``): ``c_in -> hid -> ... -> hid -> c_in`` channels.
    Stochastic depth rises linearly from 0.01 to ``drop_path`` over the blocks, the last at ``drop_path``
    (as OpenSTL's, whose first blocks drop 0.01 to ``drop_path`` even at ``drop_path: 0``; inactive in eval)."""

    def __init__(self, c_in: int, hid: int, layers: int, attention, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        rates = torch.linspace(1e-2, drop_path, layers).tolist()
        rates[-1] = drop_path
        sizes = [c_in] + [hid] * (layers - 1) + [c_in]
        self.enc = nn.ModuleList(
            MetaBlock(sizes[i], sizes[i + 1], attention(sizes[i]), mlp_ratio, drop, rates[i]) for i in range(layers)
        )

    def forward(self, z: Tensor) -> Tensor:
        for block in self.enc:
            z = block(z)
        return z


# --- TAU: the temporal attention unit -----------------------------------------------------------------
class TemporalAttention(GatedAttention):
    """TAU's attention (OpenSTL ``TemporalAttention`` with ``TemporalAttentionModule``): the statical attention
    of :class:`GatedAttention`'s large kernel times a dynamical squeeze-and-excitation over the channels::

        u = GELU(W_1 x);   SA = W_a DWConv_{k/d, dilation d}(DWConv_{2d-1}(u))        (intra-frame, statical)
        DA = sigmoid(FC_2 ReLU(FC_1 AvgPool(u)))                                     (inter-frame, dynamical)
        out = W_2 (DA o SA o u) + x

    ``FC_1``: ``dim -> dim // max(dim // 16, 4)``, ``FC_2`` back, both without bias. It keeps PyTorch's default
    initialisation, as OpenSTL's (``TAUSubBlock`` builds it after ``GASubBlock``'s initialisation ran)."""

    default_init = True

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, reduction: int = 16):
        super().__init__(dim, kernel_size, dilation, gate_channels=dim)
        if dim < 4:
            raise ValueError(f"the temporal attention needs >= 4 channels (context x hidden[0]), got {dim}")
        squeeze = dim // max(dim // reduction, 4)
        self.fc = nn.Sequential(nn.Linear(dim, squeeze, bias=False), nn.ReLU(), nn.Linear(squeeze, dim, bias=False),
                                nn.Sigmoid())

    def attend(self, u: Tensor, attn: Tensor) -> Tensor:
        se = self.fc(u.mean(dim=(2, 3)))[:, :, None, None]
        return se * self.conv1(attn) * u
