"""The shared rollout of every feed-forward window predictor (SimVP, TAU).

A window predictor maps a window of ``context`` frames to a window of as many future frames in one pass,
with no recurrence over time: ``predict_window`` on patch-space tensors (its subclass's encoder, translator
and decoder). It is trained with a fixed input window: a context of another length is an error naming
``model.model_options.context`` and the trained value (a :class:`framecast.errors.ConfigError`, exit 2).

The public API is :class:`framecast.models.base.Predictor`'s: ``model(context, horizon)`` for any horizon,
:meth:`rollout` with :class:`~framecast.models.base.Rollout`, both heads, ``residual``, ``patch_size``,
grayscale and RGB. A horizon longer than the window is rolled out by feeding the model its own predicted
windows: window ``k + 1`` reads the last ``context`` frames of ``context ++ predictions so far``; a shorter one
keeps the first ``horizon`` frames of the window, as OpenSTL's ``SimVP.forward`` (``openstl/methods/simvp.py``).
The rollout predicts the horizon only (``Rollout.start = T_ctx``), so the training loss and the metrics take
the horizon's truth (``Rollout.truth``) whatever ``loss_frames`` says. Teacher forcing has no meaning here
(nothing of the model's own is read inside a window): ``teacher_mask`` is checked and ignored.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from framecast.errors import ConfigError
from framecast.models.base import Predictor, Rollout


class WindowPredictor(Predictor):
    """Base class of feed-forward window predictors.

    Args:
        context: the input window ``T_ctx`` the model is built and trained for (its first layer sees
            ``context x hidden[0]`` channels); the output window has as many frames.
        **kwargs: the shared options of :class:`~framecast.models.base.Predictor`; ``hidden`` is
            ``[spatial, temporal]`` channels, the head reads the decoder's ``hidden[0]`` features.
    """

    head_layer = 0
    core = "predict_window"

    def __init__(self, context: int = 10, **kwargs):
        super().__init__(**kwargs)
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"model.model_options.context must be an int >= 1, got {context!r}")
        self.context = context

    # --- the window map (subclasses) -------------------------------------------------------------
    def predict_window(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, context, C*p*p, H/p, W/p)`` -> ``(features (B, context, hidden[0], H/p, W/p), translator
        features (B, context, F, h, w))``: the decoder's last features of every output frame (the head's
        input) and what the translator made of the window (the hidden-state view)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """The translator's input ``(B, T, F, h, w)`` of frames ``x (B, T, C*p*p, H/p, W/p)``."""
        raise NotImplementedError

    def window_aux_loss(self, prediction: Tensor, target: Tensor) -> Tensor | float:
        """The model's own training loss of ``prediction`` against ``target`` (both ``(B, horizon, C, H, W)``)."""
        return 0.0

    # --- shared rollout -------------------------------------------------------------------------
    def check_input(self, context: Tensor) -> None:
        super().check_input(context)
        if context.shape[1] != self.context:
            raise ConfigError(
                f"model.model_options.context: this {type(self).__name__} maps a window of {self.context} frames "
                f"(it was built and trained with model.model_options.context={self.context}), but the context "
                f"has {context.shape[1]} frames; give data with {self.context} context frames "
                f"(data.init_args.context_frames: {self.context})"
            )

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
        """Predict ``horizon`` frames from ``context (B, context, C, H, W)``, window by window.

        The arguments are :meth:`framecast.models.base.Predictor.rollout`'s. ``target`` is what the auxiliary
        loss compares with (where given); ``teacher_mask`` is checked and ignored; ``feed: sample``: every
        predicted frame is a draw of 8-bit levels from the head, and the next window reads the draws.
        ``residual``: every frame of a window is predicted relative to the last frame that window read.

        Returns a :class:`Rollout` with ``frames, params (B, horizon, ...)`` (``start = T_ctx``) and, with
        ``return_hidden``, ``hidden (B, T_ctx + horizon - 1, F, h, w)`` in the step layout: the translator's
        input (the encoded context frames read) for the first ``T_ctx - 1`` steps, then its output
        features of every predicted frame.
        """
        sample = self.check_rollout(context, horizon, feed)
        b, t_ctx, c, h, w = context.shape
        if target is not None and (tuple(target.shape[:2]) != (b, horizon) or target.shape[2:] != context.shape[2:]):
            raise ValueError(f"target must be ({b}, {horizon}, {c}, {h}, {w}), got {tuple(target.shape)}")
        if teacher_mask is not None and tuple(teacher_mask.shape) != (b, t_ctx + horizon - 2):
            raise ValueError(f"teacher_mask must be ({b}, {t_ctx + horizon - 2}), got {tuple(teacher_mask.shape)}")
        x = context
        frames, params, hiddens = [], [], []
        if return_hidden and t_ctx > 1:
            hiddens.append(self.encode(self._patch(context[:, :-1])))
        for _ in range(math.ceil(horizon / t_ctx)):
            feats, translated = self.predict_window(self._patch(x))
            current = x[:, -1:].expand(-1, t_ctx, -1, -1, -1).reshape(b * t_ctx, c, h, w)
            frame, par = self.head(feats.reshape(b * t_ctx, *feats.shape[2:]), current)
            if sample:
                frame = self.head.sample(par, generator, temperature)
            x = frame.view(b, t_ctx, c, h, w)
            frames.append(x)
            if par is not None:
                params.append(par.view(b, t_ctx, *par.shape[1:]))
            if return_hidden:
                hiddens.append(translated)
        frames_t = torch.cat(frames, 1)[:, :horizon]
        aux = self.window_aux_loss(frames_t, target) if target is not None else 0.0
        return Rollout(
            frames=frames_t,
            params=torch.cat(params, 1)[:, :horizon] if params else None,
            aux_loss=aux,
            hidden=torch.cat(hiddens, 1)[:, : t_ctx + horizon - 1] if return_hidden else None,
            horizon=horizon,
            start=t_ctx,
        )

    def _patch(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> ``(B, T, C*p*p, H/p, W/p)`` (space-to-depth, as the recurrent rollout)."""
        p = self.patch_size
        return F.pixel_unshuffle(x, p) if p > 1 else x
