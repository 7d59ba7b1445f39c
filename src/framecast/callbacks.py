"""Lightning callbacks: the end-of-fit summary with its comparison picture, and pictures during training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from framecast.metrics import MetricAccumulator
from framecast.models import CopyLast
from framecast.plots import comparison_figure, save


def output_dir(trainer: L.Trainer) -> Path:
    """Where the checkpoints of this run go (the comparison picture is written beside them)."""
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and getattr(ckpt, "dirpath", None):
        return Path(ckpt.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)


@torch.inference_mode()
def evaluate_split(module, loader, max_batches: int | None = None) -> dict[str, MetricAccumulator]:
    """Pixel metrics of the model and of copy-last on the same clips: ``{"model": acc, "copy_last": acc}``."""
    accs = {"model": MetricAccumulator(), "copy_last": MetricAccumulator()}
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        context = batch["context"].to(module.device)
        target = batch["target"].to(module.device)
        horizon = target.shape[1]
        accs["model"].add_pixel_metrics(module(context, horizon), target)
        accs["copy_last"].add_pixel_metrics(CopyLast()(context, horizon), target)
    return accs


class FitSummary(L.Callback):
    """At the end of ``fit``: validation ``mse_frame`` of the trained model and of copy-last on the same
    clips, printed, and ``comparison.png`` (context / truth / prediction / error) beside the checkpoint.

    With ``every_n_epochs > 0`` the comparison picture also goes to the logger every that many epochs
    (an image in TensorBoard where the logger has ``add_image``, else a PNG under the log folder).
    """

    def __init__(self, every_n_epochs: int = 0):
        self.every_n_epochs = every_n_epochs
        self.written: list[Path] = []

    def _picture(self, trainer, module):
        dm = trainer.datamodule
        batch = next(iter(trainer.val_dataloaders if trainer.val_dataloaders is not None else dm.val_dataloader()))
        context, target = batch["context"][:1].to(module.device), batch["target"][:1].to(module.device)
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            pred = module(context, target.shape[1])
        module.train(was_training)
        title = f"{module.hparams.model}, step {trainer.global_step}"
        return comparison_figure(context[0], target[0], pred[0], title=title, fps=getattr(dm, "fps", None))

    def on_validation_epoch_end(self, trainer, module):
        n = self.every_n_epochs
        if n <= 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % n or not trainer.is_global_zero:
            return
        fig = self._picture(trainer, module)
        logger = trainer.logger
        exp = getattr(logger, "experiment", None)
        if exp is not None and hasattr(exp, "add_figure"):
            exp.add_figure("val/comparison", fig, global_step=trainer.global_step)
        else:
            save(fig, Path(trainer.log_dir or trainer.default_root_dir) / "images" / f"comparison_step{trainer.global_step}.png")

    def on_fit_end(self, trainer, module):
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        module.eval()
        accs = evaluate_split(module, trainer.datamodule.val_dataloader())
        model_mse, copy_mse = accs["model"].mean("mse_frame"), accs["copy_last"].mean("mse_frame")
        n = accs["model"].counts["mse_frame"]
        path = save(self._picture(trainer, module), output_dir(trainer) / "comparison.png")
        self.written.append(path)
        self.result = {"model_mse_frame": model_mse, "copy_last_mse_frame": copy_mse, "clips": n}
        print(f"\nvalidation mse_frame on {n} clips: model {model_mse:.2f}, copy-last baseline {copy_mse:.2f} "
              f"({model_mse / copy_mse:.2f}x)")
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "last_model_path", ""):
            print(f"checkpoint: {ckpt.last_model_path}")
        print(f"comparison picture: {path}")
