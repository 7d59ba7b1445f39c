"""``FramePredictionModule``: trains and evaluates any registered predictor with Lightning.

Training: the predictor rolls out over ``context ++ target`` with the teacher forcing schedule's mask and
the loss is taken on the frames it predicts (``Rollout.truth``: a recurrent predictor's next-frame predictions,
all ``T_ctx + T_pred - 1`` of them, as PredRNN does; a window predictor's horizon), or only the horizon with
``loss_frames: horizon``, plus the model's own auxiliary loss (PredRNN-v2's decoupling loss, TAU's
differential divergence). Validation and test: a plain rollout from the context alone, the loss on the horizon,
and the spec's metrics per horizon step, for the model and for the copy-last baseline on the same clips.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from framecast.evaluation import score
from framecast.losses import FrameLoss, parse_loss_stages
from framecast.metrics import MetricAccumulator, pixel_metrics
from framecast.models import CopyLast, build_model
from framecast.schedules import build_schedule


def compile_predictor(model: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
    """``torch.compile`` the core of a predictor in place (``Predictor.core``: the recurrent step, or a window
    predictor's window map; ``mode``: torch.compile's, e.g. ``reduce-overhead`` for CUDA graphs). The weights
    and the ``state_dict`` are unchanged."""
    core = getattr(model, "core", None)
    if core is not None and hasattr(model, core):
        setattr(model, core, torch.compile(getattr(model, core), mode=mode))
    return model


class NonFiniteError(FloatingPointError):
    """The training loss or a gradient became NaN or infinite; the message names the step and the cause."""


class FramePredictionModule(L.LightningModule):
    """A frame predictor and how it is trained.

    Args:
        model: registered predictor name (``convlstm``, ``convgru``, ``predrnn``, ``predrnn_v2``).
        channels: frame channels; linked to the data module's ``channels`` by the CLI.
        hidden, kernel_size, patch_size, residual, head, num_mixtures: predictor options
            (:class:`framecast.models.Predictor`).
        model_options: further options of a particular predictor (``layer_norm``, ``decouple_weight``).
        loss: a name, ``"a+b"`` or ``{name: weight}`` of ``mse, l1, gdl, ssim, bits``.
        loss_stages: a loss curriculum, ``{step: loss}``: from that optimizer step (``global_step``) on, train on
            that loss instead, e.g. ``{1500: l1}`` (``loss`` before the first stage). Validation reports the
            loss in effect at its step; the metrics do not change.
        loss_frames: ``all`` next-frame predictions or only the ``horizon``.
        lr, weight_decay, betas: AdamW.
        lr_schedule: ``constant`` or ``cosine`` (to 1 % of ``lr`` at the last step), after
            ``warmup_steps`` of linear warm-up.
        teacher_forcing: ``none``, ``scheduled_sampling`` or ``reverse_scheduled_sampling``, with
            ``teacher_forcing_options`` (see :mod:`framecast.schedules`).
        compile: ``torch.compile`` the predictor's recurrent step (:func:`compile_predictor`); the rollout
            loop stays in Python. Off by default: compiling takes a while, and on the CPU it gains little.
        reverse_input: every training iteration takes a second optimizer step on the time-reversed clip
            (``context ++ target`` flipped in time, split at the same place), with the same teacher
            forcing mask, as the official PredRNN training does (thuml/predrnn-pytorch ``core/trainer.py``
            ``train``: ``model.train(ims)`` then ``model.train(np.flip(ims, axis=1))``; ``--reverse_input 1``
            in its scripts). It runs under Lightning's manual optimization (only when on): one batch is two
            ``optimizer.step()`` calls, each followed by the LR schedule's step, so ``trainer.max_steps``
            and ``global_step`` count optimizer steps, two per batch, while the teacher forcing schedule
            runs on iterations (``global_step // 2``, the official ``itr``). Lightning's manual optimization
            does not take ``trainer.gradient_clip_val`` or ``accumulate_grad_batches`` (the official
            training uses neither). ``train/loss`` is the mean of the two steps' losses, as the official
            ``cost``.
    """

    def __init__(
        self,
        model: str = "convlstm",
        channels: int = 1,
        hidden: list[int] = [64, 64],  # noqa: B006  (jsonargparse needs a literal default)
        kernel_size: int = 5,
        patch_size: int = 4,
        residual: bool = False,
        head: str = "deterministic",
        num_mixtures: int = 5,
        model_options: dict[str, Any] | None = None,
        loss: str | dict[str, float] = "mse",
        loss_stages: dict[int, str | dict[str, float]] | None = None,
        loss_frames: str = "all",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        teacher_forcing: str = "none",
        teacher_forcing_options: dict[str, Any] | None = None,
        compile: bool = False,
        reverse_input: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = not reverse_input  # reverse_input: two optimizer steps per batch
        if loss_frames not in ("all", "horizon"):
            raise ValueError(f"model.loss_frames must be 'all' or 'horizon', got {loss_frames!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"model.lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        self.loss_fn = FrameLoss(loss)
        self.loss_stages = parse_loss_stages(loss_stages)
        self.model = build_model(model, channels=channels, hidden=hidden, kernel_size=kernel_size,
                                 patch_size=patch_size, residual=residual, head=head,
                                 num_mixtures=num_mixtures, **(model_options or {}))
        needs_distribution = any(f.needs_distribution for f in [self.loss_fn, *(f for _, f in self.loss_stages)])
        if needs_distribution and not hasattr(getattr(self.model, "head", None), "bits"):
            raise ValueError("loss 'bits' needs a per-pixel distribution: set model.head: logistic_mixture "
                             "(or warp_mixture)")
        self.teacher_forcing = build_schedule(teacher_forcing, **(teacher_forcing_options or {}))
        self._eval_accs: dict[str, dict[str, MetricAccumulator]] = {}  # split -> model/copy_last -> sums
        if compile:
            compile_predictor(self.model)

    def forward(self, context: Tensor, horizon: int) -> Tensor:
        """``context (B, T_ctx, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``."""
        return self.model(context, horizon)

    # --- training ------------------------------------------------------------------------------
    @property
    def current_loss(self) -> FrameLoss:
        """The loss in effect at ``global_step``: ``loss``, or the last of ``loss_stages`` that has begun."""
        loss_fn = self.loss_fn
        for start, stage in self.loss_stages:
            if self.global_step >= start:
                loss_fn = stage
        return loss_fn

    def _losses(self, roll, truth: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of the rollout's frames ``(B, T', C, H, W)`` against ``truth`` of the same shape."""
        frames, params = roll.frames[:, -truth.shape[1] :], roll.params
        loss_fn = self.current_loss
        bits = None
        if params is not None and loss_fn.needs_distribution:
            bits = self.model.head.bits(params[:, -truth.shape[1] :], truth)
        loss, parts = loss_fn(frames, truth, bits)
        return loss, parts

    @property
    def schedule_step(self) -> int:
        """The training iteration the teacher forcing schedule is at: ``global_step``, or with
        ``reverse_input`` (two optimizer steps per batch) ``global_step // 2``."""
        return self.global_step // 2 if self.hparams.get("reverse_input", False) else self.global_step

    def _training_loss(self, context: Tensor, target: Tensor, mask: Tensor | None):
        """The training loss of one clip under the teacher forcing ``mask``: ``(loss, parts, aux_loss)``."""
        roll = self.model.rollout(context, target.shape[1], target=target, teacher_mask=mask)
        truth = roll.truth(context, target) if self.hparams.loss_frames == "all" else target
        loss, parts = self._losses(roll, truth)
        return loss + roll.aux_loss, parts, roll.aux_loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        context, target = batch["context"], batch["target"]
        b, t_ctx = context.shape[:2]
        horizon = target.shape[1]
        step = self.schedule_step
        mask = self.teacher_forcing.mask(step, b, t_ctx, horizon, device=context.device,
                                         generator=self._step_generator(context.device))
        if self.automatic_optimization:
            loss, parts, aux = self._training_loss(context, target, mask)
            self._last_loss = loss.detach()
        else:  # reverse_input: the official train(): a step on the clip, then one on it reversed in time
            opt, sched = self.optimizers(), self.lr_schedulers()
            clip = torch.cat([context, target], 1).flip(1)
            results = []
            for ctx, tgt in ((context, target), (clip[:, :t_ctx], clip[:, t_ctx:])):
                loss, parts, aux = self._training_loss(ctx, tgt, mask)
                self._last_loss = loss.detach()  # for on_before_optimizer_step's check
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                if sched is not None:
                    sched.step()
                results.append((loss.detach(), {k: v.detach() for k, v in parts.items()},
                                aux.detach() if torch.is_tensor(aux) else aux))
            (l0, p0, a0), (l1, p1, a1) = results
            loss, parts, aux = (l0 + l1) / 2, {k: (p0[k] + p1[k]) / 2 for k in p0}, (a0 + a1) / 2
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for name, v in parts.items():
            if len(parts) > 1:
                self.log(f"train/{name}", v, batch_size=b)
        if torch.is_tensor(aux):
            self.log("train/aux_loss", aux, batch_size=b)
        p_ctx, p_hor = self.teacher_forcing.probabilities(step)
        if self.hparams.teacher_forcing != "none":
            self.log("train/p_truth_horizon", p_hor, batch_size=b)
            self.log("train/p_truth_context", p_ctx, batch_size=b)
        return loss

    def _step_generator(self, device) -> torch.Generator:
        """Random draws of a training step (the teacher forcing mask) from ``(seed, step, rank)`` alone, so a
        run resumed from a checkpoint draws exactly what the uninterrupted run drew (Lightning does not save
        torch's global random state)."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0")) & 0xFFFFFFFF
        state = np.random.SeedSequence([seed, self.global_step, self.global_rank]).generate_state(1, np.uint64)[0]
        g = torch.Generator(device=device)
        g.manual_seed(int(state >> 1))
        return g

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite loss or gradient reaches the weights (so no checkpoint ever holds them)."""
        loss = getattr(self, "_last_loss", None)
        trainer = self._trainer
        # with fp16 AMP the gradient scaler itself skips steps with inf/nan gradients (and lowers its scale)
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        named = [(n, p.grad) for n, p in self.named_parameters() if p.grad is not None and scaler is None]
        # one fused norm over all gradients (not finite iff some gradient is not) and the loss: a single
        # device-to-host sync per step, here and only here
        values = [torch.nn.utils.get_total_norm([g for _, g in named]).float()] if named else []
        if torch.is_tensor(loss):
            values.append(loss.detach().float().reshape(()))
        if not values or bool(torch.isfinite(torch.stack(values)).all()):
            return
        where = f"step {self.global_step}"
        if trainer is not None:
            where += f" (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        if torch.is_tensor(loss) and not torch.isfinite(loss).all():
            cause = f"the training loss is {loss.item()}"
        else:
            bad = [f"{n} ({'nan' if g.isnan().any() else 'inf'})" for n, g in named if not torch.isfinite(g).all()]
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            cause = (f"the gradient of {', '.join(bad[:5])}{more} is not finite" if bad else
                     "the gradient norm overflows float32 (every gradient is finite, but huge)")
            if torch.is_tensor(loss):
                cause += f" (the loss is {loss.item():.6g})"
        ckpt = getattr(trainer, "checkpoint_callback", None) if trainer is not None else None
        last = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "")
        kept = f" The last checkpoint, written before this step, is untouched: {last}." if last else ""
        raise NonFiniteError(
            f"training stopped at {where}: {cause}. The weights were not updated.{kept} Try a lower model.lr, "
            f"trainer.gradient_clip_val, or check the data."
        )

    # --- evaluation ----------------------------------------------------------------------------
    # Validation and test metrics are exact averages over every clip of the split, on any number of
    # processes: each clip is scored on exactly one process (framecast.data.samplers.EvalSampler) into a
    # MetricAccumulator (the one evaluation path, framecast.evaluation.score), whose sums and counts are
    # added across processes once at the end of the epoch, and only then divided. (Lightning's sync_dist
    # would average the processes' means, which is exact only when every process has as many clips.)
    def evaluation_metrics(self) -> list[str]:
        """What validation and test report: the pixel metrics, and ``bits_per_pixel`` where the model has a
        per-pixel distribution."""
        return pixel_metrics() + (["bits_per_pixel"] if hasattr(self.model.head, "bits") else [])

    def _evaluate(self, batch: dict[str, Tensor], prefix: str) -> None:
        context, target = batch["context"], batch["target"]
        b, horizon = context.shape[0], target.shape[1]
        roll = self.model.rollout(context, horizon)
        loss, _ = self._losses(roll, target)
        accs = self._eval_accs.setdefault(prefix, {"model": MetricAccumulator().to(self.device),
                                                   "copy_last": MetricAccumulator().to(self.device)})
        accs["model"].add("loss", (loss.detach() * torch.ones(b, 1, device=loss.device)))
        params = roll.prediction_params()
        score(accs["model"], roll.prediction(), target, self.evaluation_metrics(),
              head=self.model.head if params is not None else None, params=params)
        score(accs["copy_last"], CopyLast()(context, horizon), target, pixel_metrics())

    def _log_evaluation(self, prefix: str) -> None:
        accs = self._eval_accs.pop(prefix, None)
        if not accs:
            return
        for who, acc in accs.items():
            acc.sync_all()
            for name in acc.names():
                steps = acc.per_step(name).float()
                key = f"{prefix}/{name}" if who == "model" else f"{prefix}/{who}/{name}"
                self.log(key, steps.mean(), sync_dist=True,  # (already global: the mean of equal values)
                         prog_bar=who == "model" and name in ("loss", "mse_frame"))
                if name == "mse_frame" or (who == "model" and name == "bits_per_pixel"):
                    for k in range(len(steps)):
                        self.log(f"{key}_t{k + 1}", steps[k], sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_accs.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._eval_accs.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """The predictions ``(B, T, C, H, W)`` in [0, 1] of the batch's context, as many frames as its target
        (10 where the batch has none); ``framecast predict`` writes them (:class:`framecast.callbacks.PredictionWriter`)."""
        horizon = batch["target"].shape[1] if "target" in batch else 10
        return self.model(batch["context"], horizon).clamp(0, 1)

    # --- optimization ----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        if hp.lr_schedule == "constant" and hp.warmup_steps == 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if hp.get("reverse_input", False):  # Lightning counts batches (up to max_steps): two steps each
            total = 2 * total if self.trainer.max_steps == -1 else min(2 * total, self.trainer.max_steps)
        warm = hp.warmup_steps

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if hp.lr_schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
