"""What ``framecast speed`` times as a training step, and the reference ConvLSTM's candidates.

:func:`lightning_trainer` makes the ``Trainer`` of ``framecast fit``'s precision (``barebones``: it runs no
loop, it only resolves the precision plugin and lets the plugin call the module's hooks the way the fit
loop does); :func:`train_step_fn` is one optimizer step through that plugin's own ``training_step`` context,
``backward`` and ``optimizer_step``; :func:`configure_optimizer` is the module's own optimizer and schedule;
:func:`reference_available` says whether the reference ConvLSTM matches the model and
:func:`reference_candidates` makes its training and inference candidates.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from framecast.errors import ConfigError
from framecast.profiling.harness import Candidate, random_batch

PRECISIONS = ("32", "bf16-mixed")
REFERENCE_NAME = "reference ConvLSTM (float32, eager, 8 convolutions per cell)"


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's notes while a ``Trainer`` is made (devices found, barebones mode, logger tips) off."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def lightning_trainer(precision: str, device: torch.device | str, gradient_clip_val: float | None = None,
                      gradient_clip_algorithm: str | None = None):
    """A ``Trainer(barebones=True)`` on ``device`` at ``precision``, with the config's gradient clipping: its
    ``precision_plugin`` is exactly the one ``framecast fit`` would use."""
    from lightning import Trainer
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    device = torch.device(device)
    accelerator = "cuda" if device.type == "cuda" else "cpu"
    devices = [device.index] if device.index is not None else 1
    try:
        with _quiet_lightning():
            return Trainer(accelerator=accelerator, devices=devices, precision=precision, barebones=True,
                           gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
    except MisconfigurationException as e:
        raise ConfigError(f"trainer: {e}") from e


def precision_plugin(precision: str, device: torch.device | str):
    """Lightning's own precision plugin for ``precision`` (Lightning's names) on ``device``, as ``framecast
    fit`` resolves it (``bf16-mixed``: ``torch.autocast`` in bfloat16)."""
    return lightning_trainer(precision, device).precision_plugin


def attach(module, trainer) -> None:
    """Make ``trainer`` the module's trainer, as ``Trainer.fit`` does before its loop (its strategy holds the
    module, so the precision plugin finds it and calls its hooks)."""
    trainer.strategy.connect(module)
    module.trainer = trainer


def configure_optimizer(module, total_steps: int):
    """The module's own ``configure_optimizers`` (a schedule asks the trainer for the step count)."""
    from types import SimpleNamespace

    module._trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
    try:
        out = module.configure_optimizers()
    finally:
        module._trainer = None
    if isinstance(out, dict):
        return out["optimizer"], out["lr_scheduler"]["scheduler"]
    return out, None


def train_step_fn(module, trainer, batch: dict[str, Tensor], optimizer, scheduler,
                  cudagraphs: bool = False) -> Callable[[], Tensor]:
    """One optimizer step of ``framecast fit``'s automatic optimization, through ``trainer``'s precision plugin
    (the module must be :func:`attach`-ed to ``trainer``): the closure runs ``training_step`` in the plugin's
    ``train_step_context`` and the plugin's ``pre_backward``/``backward``/``post_backward`` (the module's
    backward hooks); the plugin's ``optimizer_step`` runs the closure, ``on_before_optimizer_step``, gradient
    clipping and ``optimizer.step``. Then the LR schedule steps (an ``interval: step`` schedule, as the fit loop
    steps it) and ``zero_grad`` (Lightning zeroes before the step: the same in a loop). ``cudagraphs``: tell
    torch.compile's CUDA graphs that a new iteration begins."""
    plugin = trainer.precision_plugin

    def closure() -> Tensor:
        with plugin.train_step_context():
            loss = module.training_step(batch, 0)
        loss = plugin.pre_backward(loss, module)
        plugin.backward(loss, module, optimizer)
        return plugin.post_backward(loss, module)

    def step() -> Tensor:
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss = plugin.optimizer_step(optimizer, module, closure)
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def reference_available(hp: dict[str, Any]) -> str | None:
    """``None`` when the reference ConvLSTM matches the model; else why not."""
    if hp.get("model", "convlstm") != "convlstm":
        return f"the reference is a ConvLSTM; the model is {hp.get('model')!r}"
    if hp.get("head", "deterministic") != "deterministic":
        return "the reference has a deterministic head only"
    if hp.get("teacher_forcing", "none") != "none":
        return "the reference has no teacher forcing"
    loss = hp.get("loss", "mse")
    if loss not in ("mse", {"mse": 1.0}, {"mse": 1}) or hp.get("loss_frames", "all") != "all":
        return "the reference trains on the mse of all next-frame predictions only"
    if (hp.get("model_options") or {}):
        return "the reference has no model_options"
    return None


def reference_candidates(base, dims: dict[str, int], device: torch.device, batch_size: int,
                         inference_batch_size: int, seed: int) -> tuple[Candidate, Candidate]:
    """The reference ConvLSTM of ``base``'s configuration and weights, float32 eager, with the module's AdamW
    settings: its training step and inference candidates (the same random inputs as framecast's)."""
    from framecast.profiling.reference import ReferenceConvLSTM

    ref = ReferenceConvLSTM.like(base.model).to(device)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=base.hparams.lr, weight_decay=base.hparams.weight_decay,
                                betas=tuple(base.hparams.betas))
    rbatch = random_batch(batch_size, dims, device, seed + 1)
    rctx = random_batch(inference_batch_size, dims, device, seed + 2)["context"]

    def ref_step():
        loss = ref.training_loss(rbatch["context"], rbatch["target"])
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)

    def ref_inference():
        with torch.inference_mode():
            return ref(rctx, dims["horizon"])

    return (Candidate("reference", ref_step, state=(ref, ref_opt, rbatch)),
            Candidate("reference", ref_inference, state=(ref, rctx)))
