"""``FramePredictionModule``: trains and evaluates any registered predictor with Lightning.

Training: the predictor rolls out over ``context ++ target`` with the teacher forcing schedule's mask and
the loss is taken on its next-frame predictions (all ``T_ctx + T_pred - 1`` of them, as PredRNN does, or
only the horizon with ``loss_frames: horizon``), plus the model's own auxiliary loss (PredRNN-v2's
decoupling loss). Validation and test: a plain rollout from the context alone, the loss on the horizon,
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

from framecast.losses import FrameLoss
from framecast.metrics import PIXEL_METRICS
from framecast.models import CopyLast, build_model
from framecast.schedules import build_schedule

LOGGED_METRICS = ("mse_frame", "mae_frame", "mse", "psnr", "ssim")


def compile_predictor(model: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
    """``torch.compile`` the recurrent step of a predictor in place (``mode``: torch.compile's, e.g.
    ``reduce-overhead`` for CUDA graphs). The weights and the ``state_dict`` are unchanged."""
    if hasattr(model, "step"):
        model.step = torch.compile(model.step, mode=mode)
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
        loss_frames: ``all`` next-frame predictions or only the ``horizon``.
        lr, weight_decay, betas: AdamW.
        lr_schedule: ``constant`` or ``cosine`` (to 1 % of ``lr`` at the last step), after
            ``warmup_steps`` of linear warm-up.
        teacher_forcing: ``none``, ``scheduled_sampling`` or ``reverse_scheduled_sampling``, with
            ``teacher_forcing_options`` (see :mod:`framecast.schedules`).
        compile: ``torch.compile`` the predictor's recurrent step (:func:`compile_predictor`); the rollout
            loop stays in Python. Off by default: compiling takes a while, and on the CPU it gains little.
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
        loss_frames: str = "all",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        teacher_forcing: str = "none",
        teacher_forcing_options: dict[str, Any] | None = None,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        if loss_frames not in ("all", "horizon"):
            raise ValueError(f"model.loss_frames must be 'all' or 'horizon', got {loss_frames!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"model.lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        self.loss_fn = FrameLoss(loss)
        if self.loss_fn.needs_distribution and head != "logistic_mixture":
            raise ValueError("loss 'bits' needs a per-pixel distribution: set model.head: logistic_mixture")
        self.model = build_model(model, channels=channels, hidden=hidden, kernel_size=kernel_size,
                                 patch_size=patch_size, residual=residual, head=head,
                                 num_mixtures=num_mixtures, **(model_options or {}))
        self.teacher_forcing = build_schedule(teacher_forcing, **(teacher_forcing_options or {}))
        self._eval_sums: dict[str, dict[str, Tensor]] = {}  # split -> metric -> sum over clips (see _evaluate)
        if compile:
            compile_predictor(self.model)

    def forward(self, context: Tensor, horizon: int) -> Tensor:
        """``context (B, T_ctx, C, H, W)`` -> prediction ``(B, horizon, C, H, W)``."""
        return self.model(context, horizon)

    # --- training ------------------------------------------------------------------------------
    def _losses(self, roll, truth: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of the rollout's frames ``(B, T', C, H, W)`` against ``truth`` of the same shape."""
        frames, params = roll.frames[:, -truth.shape[1] :], roll.params
        bits = None
        if params is not None and self.loss_fn.needs_distribution:
            bits = self.model.head.bits(params[:, -truth.shape[1] :], truth)
        loss, parts = self.loss_fn(frames, truth, bits)
        return loss, parts

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        context, target = batch["context"], batch["target"]
        b, t_ctx = context.shape[:2]
        horizon = target.shape[1]
        mask = self.teacher_forcing.mask(self.global_step, b, t_ctx, horizon, device=context.device,
                                         generator=self._step_generator(context.device))
        roll = self.model.rollout(context, horizon, target=target, teacher_mask=mask)
        truth = torch.cat([context[:, 1:], target], 1) if self.hparams.loss_frames == "all" else target
        loss, parts = self._losses(roll, truth)
        loss = loss + roll.aux_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for name, v in parts.items():
            if len(parts) > 1:
                self.log(f"train/{name}", v, batch_size=b)
        if torch.is_tensor(roll.aux_loss):
            self.log("train/aux_loss", roll.aux_loss, batch_size=b)
        p_ctx, p_hor = self.teacher_forcing.probabilities(self.global_step)
        if self.hparams.teacher_forcing != "none":
            self.log("train/p_truth_horizon", p_hor, batch_size=b)
            self.log("train/p_truth_context", p_ctx, batch_size=b)
        self._last_loss = loss.detach()
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
    # processes: each process sums its clips' values (each clip is on one process, see
    # framecast.data.samplers.EvalSampler), the sums and counts are added across processes once at the end
    # of the epoch, and only then divided. (Lightning's sync_dist would average the processes' means,
    # which is exact only when every process has as many clips.)
    def _evaluate(self, batch: dict[str, Tensor], prefix: str) -> None:
        context, target = batch["context"], batch["target"]
        b, horizon = context.shape[0], target.shape[1]
        roll = self.model.rollout(context, horizon)
        loss, _ = self._losses(roll, target)
        pred = roll.prediction()
        sums = self._eval_sums.setdefault(prefix, {})
        dtype = torch.float32 if self.device.type == "mps" else torch.float64

        def add(name: str, value: Tensor) -> None:
            value = value.detach().to(dtype)
            sums[name] = sums[name] + value if name in sums else value

        add("clips", torch.tensor(float(b), device=self.device))
        add("loss", loss * b)
        for who, p in (("", pred), ("copy_last/", CopyLast()(context, horizon))):
            for name in LOGGED_METRICS:
                per_clip = PIXEL_METRICS[name](p, target)  # (B, T)
                if name == "psnr":
                    per_clip = per_clip.clamp(max=100.0)  # a perfect frame would make the mean inf
                add(f"{who}{name}", per_clip.sum(0))

    def _log_evaluation(self, prefix: str) -> None:
        sums = self._eval_sums.pop(prefix, {})
        if not sums:
            return
        names = list(sums)  # the same order on every process
        flat = torch.cat([sums[n].reshape(-1) for n in names])
        if self.trainer.world_size > 1:
            flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        parts = dict(zip(names, flat.split([sums[n].numel() for n in names])))
        clips = parts.pop("clips")
        for name, total in parts.items():
            steps = (total / clips).float()
            self.log(f"{prefix}/{name}", steps.mean(), sync_dist=True,  # (already global: the mean of equal values)
                     prog_bar=name in ("loss", "mse_frame"))
            if name == "mse_frame":
                for k in range(len(steps)):
                    self.log(f"{prefix}/{name}_t{k + 1}", steps[k], sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_sums.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._eval_sums.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        horizon = batch["target"].shape[1] if "target" in batch else 10
        return {"prediction": self.model(batch["context"], horizon).clamp(0, 1)}

    # --- optimization ----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        if hp.lr_schedule == "constant" and hp.warmup_steps == 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
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
