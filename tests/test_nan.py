"""A loss or gradient that turns NaN or infinite stops training with a message naming the step and the
cause, before the weights are touched, and the last checkpoint (from before) stays intact and finite."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from framecast import FramePredictionModule
from framecast.data import MovingMNISTDataModule
from framecast.module import NonFiniteError

BAD_STEP = 5


class NanLoss(FramePredictionModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == BAD_STEP:
            loss = loss * float("nan")
            self._last_loss = loss.detach()
        return loss


class InfGradient(FramePredictionModule):
    def on_after_backward(self):
        if self.global_step == BAD_STEP:
            self.model.head.conv.weight.grad[0].fill_(float("inf"))


def fit(cls, tmp_path):
    L.seed_everything(0)
    module = cls(hidden=[8], kernel_size=3, patch_size=4, lr=3e-3)
    dm = MovingMNISTDataModule(context_frames=2, horizon_frames=2, canvas=32, train_size=64, val_size=4,
                               test_size=4, batch_size=4)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True)
    trainer = L.Trainer(max_steps=10, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ckpt], num_sanity_val_steps=0, default_root_dir=tmp_path)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(module, dm)
    return module, str(info.value)


def check_last_checkpoint(tmp_path, module):
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # the last one written (every 2 steps) before step 5 failed
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    # it loads as a module, with finite weights from before the failure
    loaded = FramePredictionModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    # and the failing step never reached the weights either
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_nan_loss_stops_with_step_and_cause(tmp_path):
    module, message = fit(NanLoss, tmp_path)
    assert f"training stopped at step {BAD_STEP} " in message
    assert "the training loss is nan" in message
    assert str(tmp_path / "last.ckpt") in message and "untouched" in message
    check_last_checkpoint(tmp_path, module)


def test_infinite_gradient_names_the_parameter(tmp_path):
    module, message = fit(InfGradient, tmp_path)
    assert f"training stopped at step {BAD_STEP} " in message
    assert "gradient of model.head.conv.weight (inf)" in message and "loss is" in message
    check_last_checkpoint(tmp_path, module)
