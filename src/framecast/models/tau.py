"""TAU: SimVP with the temporal attention unit and the differential divergence regularization.

Tan, Gao, Wu, Xu, Xia, Li, Li, "Temporal Attention Unit: Towards Efficient Spatiotemporal Predictive Learning",
CVPR 2023, https://arxiv.org/abs/2206.12126. Official code in OpenSTL, https://github.com/chengtan9907/OpenSTL
(``openstl/methods/tau.py`` for the loss, ``openstl/modules/simvp_modules.py`` ``TAUSubBlock`` for the unit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from framecast.models.registry import register_model
from framecast.models.simvp import SimVP

DIVERGENCE_TEMPERATURE = 0.1  # OpenSTL openstl/methods/tau.py diff_div_reg tau=0.1
EPS = 1e-12  # and eps=1e-12


def differential_divergence(prediction: Tensor, target: Tensor, temperature: float = DIVERGENCE_TEMPERATURE) -> Tensor:
    """TAU's differential divergence of ``prediction`` from ``target`` (both ``(B, T, C, H, W)``)::

        D_t = softmax((x_{t+1} - x_t) / tau)            (over the C*H*W values of a frame difference)
        L = mean_{b, t, i} D^pred_{t,i} log(D^pred_{t,i} / (D^true_{t,i} + eps) + eps)

    the KL divergence of the true frame differences' distribution from the predicted ones', averaged over
    every element as OpenSTL's ``diff_div_reg``; 0 for ``T <= 2`` (as there)."""
    b, t = prediction.shape[:2]
    if t <= 2:
        return prediction.new_zeros(())
    gap_p = (prediction[:, 1:] - prediction[:, :-1]).reshape(b, t - 1, -1)
    gap_t = (target[:, 1:] - target[:, :-1]).reshape(b, t - 1, -1)
    p = F.softmax(gap_p / temperature, -1)
    q = F.softmax(gap_t / temperature, -1)
    return (p * torch.log(p / (q + EPS) + EPS)).mean()


@register_model("tau")
class TAU(SimVP):
    """TAU: SimVP's encoder and decoder around a translator of temporal attention units, trained with the
    differential divergence as its auxiliary loss.

    Paper: Cheng Tan, Zhangyang Gao, Lirong Wu, Yongjie Xu, Jun Xia, Siyuan Li, Stan Z. Li, "Temporal Attention
    Unit: Towards Efficient Spatiotemporal Predictive Learning", CVPR 2023, https://arxiv.org/abs/2206.12126.
    Code: OpenSTL, https://github.com/chengtan9907/OpenSTL (``openstl/methods/tau.py``,
    ``openstl/models/simvp_model.py`` with ``model_type='tau'``, ``openstl/modules/simvp_modules.py``).

    ``model(context, horizon)``: ``context (B, T_ctx, C, H, W)`` with ``T_ctx = context`` -> ``(B, horizon, C, H, W)``.
    The model is :class:`~framecast.models.simvp.SimVP` (its equations) with every translator block's attention
    the temporal attention unit (:class:`framecast.models.translators.TemporalAttention`): on the window's
    frames stacked as channels, a statical large-kernel attention within frames times a dynamical
    squeeze-and-excitation across them. Its training loss adds ``alpha x`` :func:`differential_divergence`
    of the predicted horizon from the true one (``Rollout.aux_loss``, where the rollout is given the target):
    OpenSTL's ``loss = MSE + alpha * diff_div_reg``, i.e. framecast's ``loss: mse`` plus this auxiliary loss.

    Args:
        alpha: the weight of the differential divergence (OpenSTL ``alpha``, 0.1 on Moving MNIST).
        **kwargs: :class:`~framecast.models.simvp.SimVP`'s options but ``translator`` (always ``tau``).
    """

    def __init__(self, alpha: float = 0.1, **kwargs):
        if "translator" in kwargs:
            raise ValueError("model.model_options.translator: tau's translator is always its temporal attention "
                             "unit; the translator option is simvp's")
        super().__init__(translator="tau", **kwargs)
        if not alpha >= 0:
            raise ValueError(f"model.model_options.alpha must be >= 0, got {alpha}")
        self.alpha = alpha

    def window_aux_loss(self, prediction: Tensor, target: Tensor) -> Tensor | float:
        return self.alpha * differential_divergence(prediction, target)
