"""The shared rollout of every recurrent predictor (the feed-forward window predictors, which map a whole
context window to a whole output window in one pass, are :class:`framecast.models.window.WindowPredictor`).

A predictor maps ``context (B, T_ctx, C, H, W)`` to ``prediction (B, T_pred, C, H, W)``, frames in [0, 1].
It runs one recurrent step per input frame: the context frames are fed in (teacher-forced), and from the
last context frame on, each step's output is the next input, so any horizon can be rolled out.

Subclasses own the recurrent core only (:meth:`init_state` and :meth:`step` on patch-space tensors);
this class owns what they share:

* ``patch_size``: space-to-depth (``pixel_unshuffle``) before the core and depth-to-space after, as in
  PredRNN's reshape_patch, so the core runs at ``H/p x W/p`` with ``C*p*p`` channels;
* the output head: a 1x1 convolution from the top layer's hidden state to the frame
  (``head: deterministic``) or to a per-pixel distribution (``head: logistic_mixture``, see ``heads.py``);
* ``residual``: predict the change from the current input frame instead of the frame itself;
* teacher forcing: ``teacher_mask (B, T_ctx + horizon - 2)`` chooses, for every input after the first,
  the true frame (1) or the model's own previous prediction (0); see ``framecast.schedules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framecast.models.heads import build_head


@dataclass
class Rollout:
    """Everything one rollout produced.

    Attributes:
        frames: ``(B, T', C, H, W)`` predictions; ``frames[:, t]`` predicts frame ``start + t`` of the sequence
            ``context ++ target`` (0-based). A recurrent predictor predicts every next frame (``start = 1``,
            ``T' = T_ctx + horizon - 1``), a window predictor the horizon only (``start = T_ctx``,
            ``T' = horizon``). The last ``horizon`` of them are the prediction proper (:meth:`prediction`);
            :meth:`truth` gives the true frames they predict.
        params: ``(B, T', P, H, W)`` distribution parameters of ``frames`` where the head has a distribution,
            else ``None``.
        aux_loss: scalar extra training loss of the model (PredRNN-v2's decoupling loss, TAU's differential
            divergence), else 0.
        hidden: the state per step ``s`` of the step layout (step ``s`` reads frame ``s``, ``S = T_ctx +
            horizon - 1`` steps) ``(B, S, F, h, w)`` when asked for, else ``None``: a recurrent predictor's top
            layer ``(h, w) = (H/p, W/p)``; a window predictor's translator features (its docstring).
        horizon: the number of frames predicted after the context.
        start: the index in ``context ++ target`` of the frame ``frames[:, 0]`` predicts.
    """

    frames: Tensor
    params: Tensor | None = None
    aux_loss: Tensor | float = 0.0
    hidden: Tensor | None = None
    horizon: int = field(default=0)
    start: int = 1

    def prediction(self) -> Tensor:
        """The last ``horizon`` predicted frames ``(B, horizon, C, H, W)``."""
        return self.frames[:, -self.horizon :]

    def prediction_params(self) -> Tensor | None:
        return None if self.params is None else self.params[:, -self.horizon :]

    def truth(self, context: Tensor, target: Tensor) -> Tensor:
        """The true frames ``frames`` predicts, ``(B, T', C, H, W)``, from ``context ++ target``."""
        return torch.cat([context, target], 1)[:, self.start : self.start + self.frames.shape[1]]

    def steps(self) -> Tensor:
        """``frames`` in the step layout ``(B, T_ctx + horizon - 1, C, H, W)`` (step ``s`` predicts frame
        ``s + 1``), ``NaN`` at the steps the model predicts nothing for (a window predictor's context)."""
        if self.start == 1:
            return self.frames
        b, _, c, h, w = self.frames.shape
        none = self.frames.new_full((b, self.start - 1, c, h, w), float("nan"))
        return torch.cat([none, self.frames], 1)


class Predictor(nn.Module):
    """Base class of recurrent frame predictors.

    Args:
        channels: frame channels ``C`` (1 grayscale, 3 RGB).
        hidden: channels per recurrent layer, e.g. ``[64, 64]``; an int means one layer.
        kernel_size: spatial kernel of the recurrent convolutions.
        patch_size: space-to-depth factor ``p``; ``H`` and ``W`` must be divisible by it.
        residual: predict ``x_t + delta`` instead of ``x_{t+1}`` directly.
        head: ``deterministic`` or ``logistic_mixture``.
        num_mixtures: mixture components of the ``logistic_mixture`` head.
    """

    head_layer = -1
    """The entry of ``hidden`` whose features the head reads (a window predictor's decoder: ``0``)."""
    core = "step"
    """The method that does the work per call, the one ``torch.compile`` compiles."""

    def __init__(
        self,
        channels: int = 1,
        hidden: int | list[int] = 64,
        kernel_size: int = 5,
        patch_size: int = 1,
        residual: bool = False,
        head: str = "deterministic",
        num_mixtures: int = 5,
    ):
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"model.channels must be 1 or 3, got {channels}")
        if isinstance(hidden, int):
            hidden = [hidden]
        hidden = list(hidden)
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"model.hidden must be a non-empty list of positive ints, got {hidden}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size must be a positive odd int, got {kernel_size}")
        if patch_size < 1:
            raise ValueError(f"model.patch_size must be >= 1, got {patch_size}")
        self.channels = channels
        self.hidden = hidden
        self.kernel_size = kernel_size
        self.patch_size = patch_size
        self.residual = residual
        self.in_channels = channels * patch_size * patch_size
        self.head = build_head(head, hidden[self.head_layer], channels, patch_size, num_mixtures, residual=residual)

    # --- the recurrent core (subclasses) -------------------------------------------------------
    def init_state(self, batch: int, height: int, width: int, like: Tensor):
        """The zero state for patch-space size ``height x width``."""
        raise NotImplementedError

    def step(self, x: Tensor, state) -> tuple[Tensor, object, Tensor | float]:
        """One recurrent step on a patch-space input ``x (B, C*p*p, H/p, W/p)``.

        Returns ``(top_hidden (B, hidden[-1], H/p, W/p), new_state, aux_loss)``.
        """
        raise NotImplementedError

    # --- shared rollout -------------------------------------------------------------------------
    def check_input(self, context: Tensor) -> None:
        if context.dim() != 5:
            raise ValueError(f"context must be (B, T, C, H, W), got shape {tuple(context.shape)}")
        _, _, c, h, w = context.shape
        if c != self.channels:
            raise ValueError(f"context has {c} channels but the model was built for {self.channels}")
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"frame size {h}x{w} is not divisible by the model's patch_size {p}")

    def check_rollout(self, context: Tensor, horizon: int, feed: str) -> bool:
        """The checks every rollout makes of its arguments; returns whether the frames are sampled."""
        self.check_input(context)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if feed not in ("mean", "sample"):
            raise ValueError(f"feed must be 'mean' or 'sample', got {feed!r}")
        if feed == "sample" and not hasattr(self.head, "sample"):
            raise ValueError("feed='sample' draws from a per-pixel distribution: the model needs "
                             "head: logistic_mixture")
        return feed == "sample"

    def rollout(
        self,
        context: Tensor,
        horizon: int,
        target: Tensor | None = None,
        teacher_mask: Tensor | None = None,
        return_hidden: bool = False,
        feed: Literal["mean", "sample"] = "mean",
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Rollout:
        """Run the model over the context and roll out ``horizon`` frames.

        Args:
            context: ``(B, T_ctx, C, H, W)`` in [0, 1], ``T_ctx >= 1``.
            horizon: number of frames to predict, ``>= 1``.
            target: ``(B, horizon, C, H, W)`` true future frames; only read where ``teacher_mask`` feeds
                the truth.
            teacher_mask: ``(B, T_ctx + horizon - 2)`` in {0, 1}: input ``t + 1`` is
                ``m * truth + (1 - m) * own prediction``. ``None``: the truth in the context, the model's own
                predictions after it (plain autoregressive rollout).
            return_hidden: keep the top layer's hidden state of every step.
            feed: ``mean``: every predicted frame is the head's frame (the mean of a distribution head);
                ``sample``: ancestral sampling, every frame of the horizon (steps ``T_ctx - 1`` on) is a draw of
                8-bit levels from the head's distribution (``head.sample``), and that draw is what the next
                step reads; the context's one-step predictions stay means. Needs a distribution head
                (``head: logistic_mixture``); ``params`` stay the model's own (before ``temperature``).
            generator: the random stream of the draws (on the context's device); ``None``: the global one.
            temperature: scales the logistic scales of the draws (``feed: sample`` only).
        """
        sample = self.check_rollout(context, horizon, feed)
        b, t_ctx, c, h, w = context.shape
        p = self.patch_size
        steps = t_ctx + horizon - 1
        if teacher_mask is not None:
            if target is None:
                raise ValueError("teacher_mask needs the target frames")
            if tuple(teacher_mask.shape) != (b, steps - 1):  # before the view, which would hide a bad shape
                raise ValueError(f"teacher_mask must be ({b}, {steps - 1}), got {tuple(teacher_mask.shape)}")
            if tuple(target.shape[:2]) != (b, horizon) or target.shape[2:] != context.shape[2:]:
                raise ValueError(f"target must be ({b}, {horizon}, {c}, {h}, {w}), got {tuple(target.shape)}")
            truth = torch.cat([context, target], dim=1)
            teacher_mask = teacher_mask.to(context.dtype).view(b, -1, 1, 1, 1)
        state = self.init_state(b, h // p, w // p, context)
        frames, params, hiddens = [], [], []
        aux = 0.0
        x = context[:, 0]
        for t in range(steps):
            if t > 0:
                prev = frames[-1]
                if teacher_mask is not None:
                    m = teacher_mask[:, t - 1]
                    x = m * truth[:, t] + (1 - m) * prev
                elif t < t_ctx:
                    x = context[:, t]
                else:
                    x = prev
            feat, state, step_aux = self.step(F.pixel_unshuffle(x, p) if p > 1 else x, state)
            aux = aux + step_aux
            frame, par = self.head(feat, x)
            if sample and t >= t_ctx - 1:
                frame = self.head.sample(par, generator, temperature)
            frames.append(frame)
            if par is not None:
                params.append(par)
            if return_hidden:
                hiddens.append(feat)
        return Rollout(
            frames=torch.stack(frames, 1),
            params=torch.stack(params, 1) if params else None,
            aux_loss=aux / steps,
            hidden=torch.stack(hiddens, 1) if return_hidden else None,
            horizon=horizon,
        )

    def forward(self, context: Tensor, horizon: int) -> Tensor:
        """Predict ``(B, horizon, C, H, W)`` from ``context (B, T_ctx, C, H, W)``."""
        return self.rollout(context, horizon).prediction()
