"""PhyDNet: a physically constrained recurrent cell (PhyCell) beside a ConvLSTM, in a shared latent space.

Le Guen, Thome, "Disentangling Physical Dynamics from Unknown Factors for Unsupervised Video Prediction",
CVPR 2020. https://arxiv.org/abs/2003.01460

Written after the official PyTorch implementation, https://github.com/vincent-leguen/PhyDNet (``models/models.py``,
``constrain_moments.py``, ``main.py``; OpenSTL's port, ``openstl/models/phydnet_model.py`` and
``openstl/modules/phydnet_modules.py``, computes the same and adds the encoder downsampling 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from framecast.models.base import Predictor
from framecast.models.convlstm import ConvLSTMCell
from framecast.models.heads import DeterministicHead
from framecast.models.registry import register_model


def _norm(channels: int) -> nn.GroupNorm:
    # The official blocks use GroupNorm(16, C); gcd(16, C) is that for every C the official code accepts
    # (multiples of 16) and still defined for the small widths of tests and CPU configs.
    return nn.GroupNorm(math.gcd(16, channels), channels)


def _down(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """The official ``dcgan_conv``: 3x3 convolution, group norm, LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1), _norm(out_ch), nn.LeakyReLU(0.2))


def _up(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """The official ``dcgan_upconv``: 3x3 transposed convolution, group norm, LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 3, stride, 1, output_padding=stride - 1), _norm(out_ch), nn.LeakyReLU(0.2)
    )


def moment_matrix(k: int, dtype=torch.float64) -> Tensor:
    """``M (k, k)`` with ``M[i, x] = (x - (k - 1) // 2)^i / i!`` (the official ``K2M``'s matrix): the moments of
    a ``k x k`` kernel ``w`` are ``m = M w M^T``, ``m[i, j] = sum_{x,y} w[x, y] x^i y^j / (i! j!)`` (offsets
    from the centre), and ``w * u`` approximates ``sum_{i,j} m[i, j] d^{i+j} u / dx^i dy^j``."""
    offsets = torch.arange(k, dtype=dtype) - (k - 1) // 2
    powers = torch.arange(k, dtype=dtype)
    return offsets[None, :] ** powers[:, None] / torch.exp(torch.lgamma(powers + 1))[:, None]


def moment_loss(weight: Tensor) -> Tensor:
    """The official moment regularisation of a PhyCell's ``conv1.weight (k*k, C, k, k)``: filter ``n = i*k + j``
    of every input channel should have the moment matrix ``e_ij`` (its ``(i, j)`` moment 1, the others 0),
    so that it computes ``d^{i+j} / dx^i dy^j``. Returns ``sum_c mean_{n,a,b} (m[n, c] - e_n)^2`` (the official
    ``sum_b MSE(K2M(filters[:, b]), constraints)``), computed in float64 as the official one."""
    n, _, k, _ = weight.shape
    m_mat = moment_matrix(k).to(weight.device)
    moments = torch.einsum("ax,by,ncxy->cnab", m_mat, m_mat, weight.double())
    target = torch.eye(n, dtype=torch.float64, device=weight.device).view(n, k, k)
    return (moments - target).pow(2).mean(dim=(1, 2, 3)).sum().to(weight.dtype)


class PhyCell(nn.Module):
    """One PhyCell (Le Guen & Thome 2020, eqs. 4-6 of the paper).

    With ``*`` a convolution and ``o`` the Hadamard product, ``E`` the encoded frame and ``H`` the state::

        prediction:  H~ = H + Phi(H),       Phi(H) = W_2 *1x1 GroupNorm(W_1 *kxk H)   (k*k filters W_1)
        correction:  K  = sigmoid(W_K * [E, H])                                        (3x3, with bias)
                     H' = H~ + K o (E - H~)

    ``Phi`` approximates a linear PDE ``dH/dt = sum_{i,j} c_ij d^{i+j}H / dx^i dy^j``: the ``k*k`` filters of
    ``W_1`` are pushed towards the finite-difference kernels of the partial derivatives by :func:`moment_loss`;
    ``K`` is the Kalman-like gain that mixes the physical prediction with the observation.

    Shapes: ``E, H (B, channels, h, w)``; returns ``H'`` of the same shape.
    """

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()
        filters = kernel_size * kernel_size
        self.conv1 = nn.Conv2d(channels, filters, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(kernel_size, filters)  # the official GroupNorm(7, 49)
        self.conv2 = nn.Conv2d(filters, channels, 1)
        self.gate = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, e: Tensor, h: Tensor) -> Tensor:
        k = torch.sigmoid(self.gate(torch.cat([e, h], dim=1)))
        h_tilde = h + self.conv2(self.norm(self.conv1(h)))
        return h_tilde + k * (e - h_tilde)


@register_model("phydnet")
class PhyDNet(Predictor):
    """PhyDNet: a shared encoder, a PhyCell branch and a ConvLSTM branch, their decodings summed, a decoder.

    Paper: Vincent Le Guen, Nicolas Thome, "Disentangling Physical Dynamics from Unknown Factors for
    Unsupervised Video Prediction", CVPR 2020, https://arxiv.org/abs/2003.01460.
    Code: official PyTorch implementation https://github.com/vincent-leguen/PhyDNet (``models/models.py``:
    ``EncoderRNN``, ``PhyCell``, ``ConvLSTM``; ``main.py``: the training and the moment loss); also in OpenSTL,
    https://github.com/chengtan9907/OpenSTL (``openstl/models/phydnet_model.py``).

    At step ``t``, with ``x_t (B, C*p*p, H/p, W/p)`` the (patched) input frame, ``s = downsample``::

        e   = E(x_t)                     3x3 convs: stride 2, 1, s/2; features, features, 2*features  (H/(p*s))
        H_t = PhyCell(E_p(e), H_{t-1})   E_p: two 3x3 convs to phy_channels (see :class:`PhyCell`)
        h_t = ConvLSTM(E_r(e), h_{t-1})  E_r: two 3x3 convs at 2*features; ConvLSTM layers ``hidden``
        d   = D_p(H_t) + D_r(h^top_t)    two 3x3 transposed convs each, to 2*features
        f_t = sigmoid(D(d))              transposed convs: stride 2, 1, s/2, to features, features, hidden[-1]
        y_t = head(f_t)                  the shared head, a 1x1 convolution

    each 3x3 convolution followed by a group norm and LeakyReLU(0.2) but the last of ``D``. Training adds the
    moment loss of the PhyCell's filters, ``aux = moment_weight * moment_loss(W_1)`` (:func:`moment_loss`),
    to framecast's frame loss (``rollout().aux_loss``; the same at every step, so its mean over the steps).

    framecast differs from the official code only where it generalises it, and in one place on purpose: the
    official decoder ends in a transposed convolution to the ``C`` frame channels and a sigmoid, the frame
    itself; framecast's ends in one to ``hidden[-1]`` features and the sigmoid, and the shared head (a 1x1
    convolution; or a distribution, ``residual``, patches) makes the frame of them, so both heads work. The
    official network is the case whose last convolution puts the official one in its first ``C`` outputs
    (zeros elsewhere) and whose head copies those ``C`` features (:func:`load_official_state_dict`); the
    frames of a trained framecast model are not confined to (0, 1). Generalised: the widths (``features``,
    official 32; ``phy_channels``, official 64; ``hidden``, official ``[128, 128, 64]``, whose top layer needs
    not be ``2 * features``), the group norms' groups ``gcd(16, C)`` (16 for the official widths), the PhyCell
    kernel ``phy_kernel`` (official 7, with ``k*k`` filters in ``k`` groups, the official 49 in 7), frames of
    any size divisible by ``patch_size * downsample``. One PhyCell layer, as the official model.

    Args:
        features: width of the shared encoder and decoder (official ``nf = 32``); the latent has twice it.
        phy_channels: channels of the PhyCell (official ``input_dim = 64``).
        phy_kernel: odd spatial size ``k`` of the PhyCell's ``k*k`` physical filters (official 7).
        downsample: 4 or 2, the encoder's downsampling (OpenSTL's ``patch_size``; the official code 4).
        moment_weight: weight of the moment loss, 0 turns it off. 1 adds the official term to framecast's
            mean frame loss; the official loss sums the frame MSEs over the ``T - 1`` steps, so
            ``1 / (T - 1)`` (``1/19`` at 10 -> 10) keeps the official balance.
        **kwargs: the options of :class:`framecast.models.base.Predictor` (``hidden``, ``kernel_size``: the
            ConvLSTM branch's layers and kernel, official ``[128, 128, 64]`` and 3).

    Input ``context (B, T_ctx, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``. The state is ``(H, layers)``:
    ``H (B, phy_channels, h, w)`` and per ConvLSTM layer ``(h, c)``, each ``(B, hidden[l], h, w)`` (``None``
    before the first step), ``h, w = H / (p * downsample), W / (p * downsample)``.
    """

    def __init__(
        self,
        features: int = 32,
        phy_channels: int = 64,
        phy_kernel: int = 7,
        downsample: int = 4,
        moment_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("features", features), ("phy_channels", phy_channels)):
            if value < 1:
                raise ValueError(f"model.model_options.{name} must be >= 1, got {value}")
        if phy_kernel < 1 or phy_kernel % 2 == 0:
            raise ValueError(f"model.model_options.phy_kernel must be a positive odd int, got {phy_kernel}")
        if downsample not in (2, 4):
            raise ValueError(f"model.model_options.downsample must be 2 or 4, got {downsample}")
        if not moment_weight >= 0:
            raise ValueError(f"model.model_options.moment_weight must be >= 0, got {moment_weight}")
        self.features = features
        self.phy_channels = phy_channels
        self.phy_kernel = phy_kernel
        self.downsample = downsample
        self.moment_weight = moment_weight
        nf, code, phy, top, s = features, 2 * features, phy_channels, self.hidden[-1], downsample // 2
        self.encoder = nn.Sequential(_down(self.in_channels, nf, 2), _down(nf, nf, 1), _down(nf, code, s))
        self.enc_phy = nn.Sequential(_down(code, phy, 1), _down(phy, phy, 1))
        self.enc_conv = nn.Sequential(_down(code, code, 1), _down(code, code, 1))
        self.phycell = PhyCell(phy, phy_kernel)
        ins = [code] + self.hidden[:-1]
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, self.kernel_size) for i, h in zip(ins, self.hidden))
        self.dec_phy = nn.Sequential(_up(phy, phy, 1), _up(phy, code, 1))
        self.dec_conv = nn.Sequential(_up(top, top, 1), _up(top, code, 1))
        self.decoder = nn.Sequential(
            _up(code, nf, 2), _up(nf, nf, 1), nn.ConvTranspose2d(nf, top, 3, s, 1, output_padding=s - 1)
        )

    def check_input(self, context: Tensor) -> None:
        super().check_input(context)
        h, w = context.shape[-2:]
        q = self.patch_size * self.downsample
        if h % q or w % q:
            raise ValueError(
                f"frame size {h}x{w} is not divisible by patch_size x downsample = {self.patch_size} x "
                f"{self.downsample} (model.patch_size, model.model_options.downsample)"
            )

    def aux_loss(self) -> Tensor | float:
        """``moment_weight * moment_loss`` of the PhyCell's filters (0.0 with ``moment_weight`` 0)."""
        if self.moment_weight == 0:
            return 0.0
        return self.moment_weight * moment_loss(self.phycell.conv1.weight)

    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        s = self.downsample
        return like.new_zeros(batch, self.phy_channels, height // s, width // s), [None] * len(self.hidden)

    def step(self, x: Tensor, state):
        h_phy, layers = state
        e = self.encoder(x)
        h_phy = self.phycell(self.enc_phy(e), h_phy)
        z = self.enc_conv(e)
        new = []
        for cell, s in zip(self.cells, layers):
            z, c = cell(z, s)
            new.append((z, c))
        feat = torch.sigmoid(self.decoder(self.dec_phy(h_phy) + self.dec_conv(z)))
        return feat, (h_phy, new), self.aux_loss()


_SEQ = {"encoder_E": ("encoder", "c"), "encoder_Ep": ("enc_phy", "c"), "encoder_Er": ("enc_conv", "c"),
        "decoder_Dp": ("dec_phy", "upc"), "decoder_Dr": ("dec_conv", "upc"), "decoder_D": ("decoder", "upc")}


def load_official_state_dict(model: PhyDNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load the weights of an official vincent-leguen/PhyDNet network (``models/models.py``'s ``EncoderRNN``,
    e.g. its ``save/encoder_phydnet.pth``, or OpenSTL's ``PhyDNet_Model``, keys ``encoder.*``, optionally
    under ``model.`` and ``"state_dict"``) into ``model``, in place.

    Names: ``encoder_E.c<i>.main.<j>`` -> ``encoder.<i-1>.<j>`` (``encoder_Ep`` -> ``enc_phy``, ``encoder_Er``
    -> ``enc_conv``, ``decoder_Dp`` / ``decoder_Dr`` / ``decoder_D`` with ``upc<i>`` -> ``dec_phy`` /
    ``dec_conv`` / ``decoder``), ``phycell.cell_list.0.F.conv1|bn1|conv2`` -> ``phycell.conv1|norm|conv2``,
    ``phycell.cell_list.0.convgate`` -> ``phycell.gate``, ``convcell.cell_list.<l>.conv`` -> ``cells.<l>.conv``
    with the gates reordered (official ``i, f, o, g``, framecast's ``i, f, g, o``). The official last
    convolution ``decoder_D.upc3`` (to the ``C`` frame channels) fills the first ``C`` of framecast's
    ``hidden[-1]`` outputs, the others zero, and the head copies those ``C`` features: framecast's frame is
    then the official ``sigmoid(decoder_D(.))``.

    ``model`` must have the official architecture: ``patch_size`` 1, the deterministic head, no ``residual``,
    one PhyCell layer and the widths and kernels of the weights; otherwise ``ValueError``. ``downsample`` must
    be the weights' too (the official code's is 4), which their shapes do not tell. The official rollout then
    equals :meth:`Predictor.rollout` with the same teacher forcing.
    """
    if not isinstance(model, PhyDNet):
        raise TypeError(f"load_official_state_dict needs a PhyDNet, got {type(model).__name__}")
    sd = {}
    for key, value in state_dict.get("state_dict", state_dict).items():
        key = key.removeprefix("model.")
        if not key.startswith("k2m."):  # OpenSTL's K2M buffers; its EncoderRNN is `.encoder`, its cells twice
            sd[key.removeprefix("encoder.")] = value
    problems = []
    if model.patch_size != 1:
        problems.append("patch_size must be 1 (the official network reads whole frames)")
    if not isinstance(model.head, DeterministicHead) or model.residual:
        problems.append("the official network needs head: deterministic and residual: false")
    if model.hidden[-1] < model.channels:
        problems.append(f"hidden[-1] must be >= channels ({model.channels}) to hold the official frame")
    if any(".cell_list.1." in k for k in sd if k.startswith("phycell.")):
        problems.append("framecast has one PhyCell layer, the weights have more")
    if problems:
        raise ValueError("load_official_state_dict: " + "; ".join(problems))

    c = model.channels
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[:2] == ["decoder_D", "upc3"]:  # the official last convolution, to the C frame channels
            padded = torch.zeros_like(getattr(model.decoder[2], parts[2]))
            padded.narrow(-1 if parts[2] == "bias" else 1, 0, c).copy_(value)
            out[f"decoder.2.{parts[2]}"] = padded
        elif parts[0] in _SEQ:
            name, prefix = _SEQ[parts[0]]
            index = int(parts[1].removeprefix(prefix)) - 1
            out[f"{name}.{index}.{parts[3]}.{parts[4]}"] = value
        elif parts[:3] == ["phycell", "cell_list", "0"]:
            rest = {"convgate": "gate"}.get(parts[3]) or {"bn1": "norm"}.get(parts[4], parts[4])
            out[f"phycell.{rest}.{parts[-1]}"] = value
        elif parts[:2] == ["convcell", "cell_list"]:
            i, f, o, g = value.chunk(4, dim=0)
            out[f"cells.{parts[2]}.conv.{parts[-1]}"] = torch.cat([i, f, g, o])
        else:
            raise ValueError(f"load_official_state_dict: unexpected official weight {key!r}")
    head = model.head.conv
    out["head.conv.weight"] = torch.eye(c, head.in_channels).view_as(head.weight)
    out["head.conv.bias"] = torch.zeros_like(head.bias)
    try:
        model.load_state_dict(out, strict=True)
    except RuntimeError as e:
        raise ValueError(f"load_official_state_dict: the weights do not fit the model's options: {e}") from None
