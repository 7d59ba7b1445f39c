"""Lightning callbacks: the end-of-fit summary with its comparison picture, pictures during training, and the
writer of ``framecast predict``'s predictions."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from framecast.viz.figures import comparison_figure, save

COMPARISON_TAG = "val/comparison"


def output_dir(trainer: L.Trainer) -> Path:
    """Where the checkpoints of this run go (the comparison picture is written beside them)."""
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and getattr(ckpt, "dirpath", None):
        return Path(ckpt.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)


def validation_batches(trainer: L.Trainer, loader: Iterable[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
    """The batches of ``loader`` that validation uses: ``trainer.limit_val_batches`` of them (a number of
    batches, or a fraction of the loader as Lightning reads a float)."""
    limit = trainer.limit_val_batches
    if isinstance(limit, float):
        try:
            total = len(loader)  # type: ignore[arg-type]
        except TypeError:  # an iterable without a length: Lightning only takes 0.0 or 1.0 of it
            total = None
        if total is None or limit >= 1.0:
            return iter(loader)
        limit = 0 if limit <= 0 else max(1, int(total * limit))
    return itertools.islice(loader, int(limit))


class FitSummary(L.Callback):
    """At the end of ``fit``: validation ``mse_frame`` of the trained model and of copy-last on the same
    clips, printed, and ``comparison.png`` (context / truth / prediction / error) beside the checkpoint (and
    in the logger, as an image where it takes figures: TensorBoard).

    Args:
        every_n_epochs: with ``> 0`` the comparison picture also goes to the logger every that many epochs
            (an image in TensorBoard where the logger has ``add_figure``, else a PNG under the log folder).
        clips: evaluate the summary on at most this many validation clips; default (None): the clips
            validation used (``trainer.limit_val_batches`` applies).
    """

    def __init__(self, every_n_epochs: int = 0, clips: int | None = None):
        if every_n_epochs < 0:
            from framecast.errors import ConfigError

            raise ConfigError(f"summary.every_n_epochs must be >= 0 (0: only at the end of fit), got {every_n_epochs}")
        if clips is not None and clips < 1:
            from framecast.errors import ConfigError

            raise ConfigError(f"summary.clips must be >= 1 (or null: the clips validation used), got {clips}")
        self.every_n_epochs = every_n_epochs
        self.clips = clips
        self._logged_steps: set[int] = set()

    def on_fit_start(self, trainer, module) -> None:
        """At the start of ``fit``: where the data has named splits (video), write ``splits.json`` beside the
        checkpoints and print one line per run, so every split can be inspected and reproduced."""
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "write_splits") or not trainer.is_global_zero:
            return
        if not getattr(dm, "windows", None):
            dm.setup("fit")  # (idempotent: Lightning has already called it before this hook)
        path = dm.write_splits(output_dir(trainer))
        print(f"{dm.splits_line()}; every split in {path}")

    def _picture(self, trainer, module, loader=None):
        dm = trainer.datamodule
        if loader is None:
            loader = trainer.val_dataloaders if trainer.val_dataloaders is not None else dm.val_dataloader()
        batch = next(iter(loader), None)
        if batch is None:
            return None
        context, target = batch["context"][:1].to(module.device), batch["target"][:1].to(module.device)
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            pred = module(context, target.shape[1])
        module.train(was_training)
        title = f"{module.hparams.model}, step {trainer.global_step}"
        return comparison_figure(context[0], target[0], pred[0], title=title, fps=getattr(dm, "fps", None))

    def _log_figure(self, trainer, fig) -> bool:
        """Send ``fig`` to the logger as an image (once per step); False where the logger takes no figures."""
        exp = getattr(trainer.logger, "experiment", None)
        if exp is None or not hasattr(exp, "add_figure"):
            return False
        step = trainer.global_step
        if step not in self._logged_steps:
            exp.add_figure(COMPARISON_TAG, fig, global_step=step, close=False)
            self._logged_steps.add(step)
            if hasattr(exp, "flush"):
                exp.flush()
        return True

    def on_validation_epoch_end(self, trainer, module):
        n = self.every_n_epochs
        if n <= 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % n or not trainer.is_global_zero:
            return
        fig = self._picture(trainer, module)
        if fig is None:
            return
        if self._log_figure(trainer, fig):
            import matplotlib.pyplot as plt

            plt.close(fig)
            return
        save(fig, Path(trainer.log_dir or trainer.default_root_dir) / "images" / f"comparison_step{trainer.global_step}.png")

    def on_fit_end(self, trainer, module):
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        from framecast.evaluation import Candidate, evaluate, limit

        loader = trainer.datamodule.val_dataloader()
        batches = limit(loader, self.clips) if self.clips is not None else validation_batches(trainer, loader)
        was_training = module.training
        module.eval()
        accs = evaluate([Candidate.for_model("model", module.model), Candidate.baseline("copy_last")], batches,
                        metrics=["mse_frame"], device=module.device)
        module.train(was_training)
        n = accs["model"].clips
        if n:
            model_mse, copy_mse = accs["model"].mean("mse_frame"), accs["copy_last"].mean("mse_frame")
            ratio = f" ({model_mse / copy_mse:.2f}x)" if copy_mse > 0 else ""
            print(f"\nvalidation mse_frame on {n} clips: model {model_mse:.2f}, copy-last baseline {copy_mse:.2f}{ratio}")
        else:
            print("\nno validation clips (trainer.limit_val_batches 0 or an empty validation split): no summary")
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "last_model_path", ""):
            print(f"checkpoint: {ckpt.last_model_path}")
        fig = self._picture(trainer, module, loader)
        if fig is None:
            return
        self._log_figure(trainer, fig)
        print(f"comparison picture: {save(fig, output_dir(trainer) / 'comparison.png')}")


def to_uint8(frames: Tensor) -> np.ndarray:
    """Frames in [0, 1] -> uint8 0..255 (rounded), as a NumPy array."""
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _prediction_tensor(output: Any) -> Tensor:
    """A ``predict_step`` output: the predictions tensor (or a dict holding it under ``prediction``)."""
    if isinstance(output, dict):
        output = output["prediction"]
    if not torch.is_tensor(output):
        raise TypeError(f"predict_step returned {type(output).__name__}; PredictionWriter needs a tensor")
    return output


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``framecast predict`` as uint8 ``.npy`` arrays ``(N, T, C, H, W)``, values
    0..255 (the frames in [0, 1] times 255, rounded), and prints every file it writes.

    Args:
        output_dir: the folder (default ``<log_dir or default_root_dir>/predictions``).
        write_interval: ``epoch``: one file ``predictions.npy`` of every clip at the end; ``batch``: one file
            per batch, ``predictions_batchK.npy`` (nothing kept in memory).

    With several processes each writes its own clips, the file names ending in ``_rankR``; with several
    predict loaders, ``_loaderL``.
    """

    def __init__(self, output_dir: str | None = None, write_interval: Literal["batch", "epoch"] = "epoch"):
        if write_interval not in ("batch", "epoch"):
            from framecast.errors import ConfigError

            raise ConfigError(f"prediction.write_interval must be 'batch' or 'epoch', got {write_interval!r}")
        super().__init__(write_interval)
        self.output_dir = output_dir

    def folder(self, trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def _write(self, trainer, array: np.ndarray, stem: str) -> Path:
        if trainer.world_size > 1:
            stem += f"_rank{trainer.global_rank}"
        path = self.folder(trainer) / f"{stem}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.save(f, array)
        tmp.replace(path)
        print(f"wrote {path} (predictions {tuple(array.shape)} uint8 0..255)", flush=True)
        return path

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        loader = f"_loader{dataloader_idx}" if len(trainer.num_predict_batches) > 1 else ""
        self._write(trainer, to_uint8(_prediction_tensor(prediction)), f"predictions{loader}_batch{batch_idx}")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        per_loader = predictions if predictions and isinstance(predictions[0], list) else [predictions]
        for i, outputs in enumerate(per_loader):
            loader = f"_loader{i}" if len(per_loader) > 1 else ""
            if not outputs:
                print(f"no clips to predict{f' in predict loader {i}' if loader else ''}: nothing written")
                continue
            frames = torch.cat([_prediction_tensor(o).detach().cpu() for o in outputs])
            self._write(trainer, to_uint8(frames), f"predictions{loader}")
