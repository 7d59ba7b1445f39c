"""The training module: a few dozen steps on real-MNIST moving digits lower the loss; checkpoints rebuild."""

import lightning as L
import pytest
import torch

from framecast import FramePredictionModule
from framecast.data import MovingMNISTDataModule


def tiny_module(**kw):
    args = {"model": "convlstm", "hidden": [16], "kernel_size": 3, "patch_size": 4, "lr": 3e-3}
    args.update(kw)
    return FramePredictionModule(**args)


def test_a_few_dozen_steps_on_real_digits_lower_the_loss(mnist_path, tmp_path):
    L.seed_everything(0)
    dm = MovingMNISTDataModule(digits=str(mnist_path), context_frames=4, horizon_frames=4, train_size=40 * 8,
                               val_size=16, test_size=16, batch_size=8)
    dm.setup()
    module = tiny_module()
    opt = module.configure_optimizers()
    losses = []
    for i, batch in enumerate(dm.train_dataloader()):
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)


def test_fit_writes_checkpoint_that_rebuilds_the_model(tmp_path):
    L.seed_everything(0)
    dm = MovingMNISTDataModule(context_frames=3, horizon_frames=2, train_size=8, val_size=4, test_size=4, batch_size=4)
    module = tiny_module(hidden=[8, 8])
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = FramePredictionModule.load_from_checkpoint(path, weights_only=True)
    x = torch.rand(2, 3, 1, 64, 64)
    module.eval()
    assert loaded.hparams.hidden == [8, 8]
    assert torch.equal(loaded(x, 5), module(x, 5))


def test_validation_logs_mse_frame_per_step_and_copy_last(tmp_path):
    dm = MovingMNISTDataModule(context_frames=3, horizon_frames=2, train_size=8, val_size=8, test_size=4, batch_size=4)
    trainer = L.Trainer(max_steps=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    out = trainer.validate(tiny_module(), dm, verbose=False)[0]
    for key in ("val/mse_frame", "val/mse_frame_t1", "val/mse_frame_t2", "val/copy_last/mse_frame", "val/loss"):
        assert key in out
    assert out["val/mse_frame"] == pytest.approx((out["val/mse_frame_t1"] + out["val/mse_frame_t2"]) / 2, rel=1e-5)
    assert out["val/mse_frame"] == pytest.approx(out["val/mse"] * 64 * 64, rel=1e-4)


def test_bad_module_options_are_named():
    with pytest.raises(ValueError, match="unknown model 'convlsm'"):
        tiny_module(model="convlsm")
    with pytest.raises(ValueError, match="loss names"):
        tiny_module(loss="mse+fancy")
    with pytest.raises(ValueError, match="logistic_mixture"):
        tiny_module(loss="bits")
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_module(lr_schedule="step")


def test_loss_stages_switch_the_training_loss_at_their_step(tmp_path):
    """``loss_stages: {3: l1}``: optimizer steps 0-2 train on mse, steps 3 and 4 on l1."""
    L.seed_everything(0)
    dm = MovingMNISTDataModule(context_frames=3, horizon_frames=2, train_size=20, val_size=4, test_size=4, batch_size=4)
    module = tiny_module(hidden=[8], loss_stages={"3": "l1"})
    seen = []

    class Record(L.Callback):  # the mse and l1 of the weights the step starts from, then the loss it trained on
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            truth = torch.cat([batch["context"][:, 1:], batch["target"]], 1)
            with torch.no_grad():
                pred = pl_module.model.rollout(batch["context"], 2, target=batch["target"]).frames
            self.now = (trainer.global_step, (pred - truth).pow(2).mean().item(), (pred - truth).abs().mean().item())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((*self.now, outputs["loss"].item()))

    trainer = L.Trainer(max_steps=5, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        callbacks=[Record()])
    trainer.fit(module, dm)
    assert [s for s, *_ in seen] == [0, 1, 2, 3, 4]
    for step, mse, l1, loss in seen:
        assert loss == pytest.approx(mse if step < 3 else l1, rel=1e-5), (step, mse, l1, loss)
    assert module.current_loss.weights == {"l1": 1.0}


def test_bad_loss_stages_are_named():
    with pytest.raises(ValueError, match="loss_stages: the step 'soon'"):
        tiny_module(loss_stages={"soon": "l1"})
    with pytest.raises(ValueError, match="loss_stages: the step 0"):
        tiny_module(loss_stages={0: "l1"})
    with pytest.raises(ValueError, match="model.loss_stages, step 10: unknown loss"):
        tiny_module(loss_stages={10: "l2"})
    with pytest.raises(ValueError, match="logistic_mixture"):
        tiny_module(loss_stages={10: "bits"})
