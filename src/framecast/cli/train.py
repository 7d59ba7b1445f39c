"""``framecast fit | validate | test | predict``: Lightning's CLI with framecast's sections and defaults.

Sections besides ``model`` / ``data`` / ``trainer``: ``checkpoint`` (``ModelCheckpoint``, ``save_last`` on),
``summary`` (:class:`~framecast.callbacks.FitSummary`) and ``prediction``
(:class:`~framecast.callbacks.PredictionWriter`, what ``predict`` writes). ``trainer.logger`` defaults to a
``TensorBoardLogger`` under ``trainer.default_root_dir`` (``tensorboard --logdir runs`` shows every run).

Errors follow :mod:`framecast.errors`: a constructor rejecting a config value is a
:class:`~framecast.errors.ConfigError` naming the field; a missing, unsafe or mismatched ``--ckpt_path`` and
bad videos are bad input too (exit code 2, one message, no traceback).
"""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
from pathlib import Path

from lightning import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from framecast.callbacks import FitSummary, PredictionWriter
from framecast.checkpoints import find_last_checkpoint, refusal, use_safe_checkpoint_io
from framecast.checks import check_model_and_data
from framecast.cli.grammar import _first_lines, _unwrap, int_before_float
from framecast.errors import ConfigError, InputError, bad_input_cause
from framecast.module import FramePredictionModule
from framecast.precision import default_precision, precision_line, training_device

# ``--ckpt_path`` values Lightning resolves itself (not file names)
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


class FramecastCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.add_lightning_class_args(FitSummary, "summary")
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.link_arguments("data.channels", "model.channels", apply_on="instantiate")
        int_before_float(parser)

    def parse_arguments(self, parser, args):
        # (Lightning's own version warns whenever ``args`` is given while ``sys.argv`` has arguments: here
        # ``args`` *is* the command line, minus ``framecast``)
        try:
            self.config = parser.parse_args(args)
        except argparse.ArgumentError as e:  # one message instead of the whole usage
            command = " ".join(["framecast"] + [a for a in args[:1] if not a.startswith("-")])
            raise ConfigError(f"{_first_lines(str(e))}\n(see {command} --help)") from e

    def _parse_ckpt_path(self):  # Lightning reads --ckpt_path's hyper-parameters (weights_only) first
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as e:
            raise refusal(self.config[self.config.subcommand].get("ckpt_path"), e) from None
        except argparse.ArgumentError as e:  # the checkpoint's hyper-parameters do not parse
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise InputError(f"--ckpt_path {path}: its hyper-parameters do not fit this version's options: {e}") from e

    def instantiate_classes(self):
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as e:  # a constructor rejected a config value: its message names it
            if bad_input_cause(e) is not None:
                raise
            raise ConfigError(str(_unwrap(e))) from e

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer", default={})
        self._precision_line = None
        if self.subcommand == "fit":  # the default precision: bf16-mixed where the device has native bf16
            given = kwargs.get("precision", config.get("precision"))
            if given is None:
                chosen, reason = default_precision(training_device(config.get("accelerator") or "auto"))
                kwargs["precision"] = chosen
                self.config[self.subcommand]["trainer"]["precision"] = chosen  # the saved config.yaml says it
                self._precision_line = precision_line(chosen, reason, chosen=True)
            else:
                self._precision_line = precision_line(str(given), "", chosen=False)
        if "logger" not in kwargs and config.get("logger") in (None, True):
            from lightning.pytorch.loggers import TensorBoardLogger
            from lightning.pytorch.plugins.environments import SLURMEnvironment

            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = TensorBoardLogger(save_dir=root, version=SLURMEnvironment.job_id())
        trainer = super().instantiate_trainer(**kwargs)
        use_safe_checkpoint_io(trainer)  # --ckpt_path is only ever loaded with weights_only=True
        return trainer

    def _before(self, stage: str) -> None:
        check_model_and_data(self.model, self.datamodule, stage)  # before any data is decoded
        if stage != "fit":  # a checkpoint's ModelCheckpoint state does not matter when no checkpoint is written
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        config = self.config_init[self.subcommand]
        if "weights_only" in config:
            config["weights_only"] = True
        ckpt = config.get("ckpt_path")
        if stage == "fit" and ckpt == "last":
            last = find_last_checkpoint(self.trainer)
            if last is not None:
                config["ckpt_path"] = str(last)
                print(f"resuming from {last}")
        elif ckpt and ckpt not in SPECIAL_CKPT_PATHS and "://" not in str(ckpt) and not Path(ckpt).is_file():
            raise InputError(f"--ckpt_path {ckpt}: no such checkpoint file")

    def before_fit(self):
        self._before("fit")
        if self._precision_line and self.trainer.is_global_zero:
            print(self._precision_line)

    def before_validate(self):
        self._before("validate")

    def before_test(self):
        self._before("test")

    def before_predict(self):
        self._before("predict")


def _mismatch(error: RuntimeError, argv: list[str]) -> InputError | None:
    """A checkpoint whose weights do not fit the model built from the config: bad input, not a bug."""
    text = str(error)
    if "Error(s) in loading state_dict" not in text:
        return None
    ckpt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"),
                next((a.partition("=")[2] for a in argv if a.startswith("--ckpt_path=")), "the checkpoint"))
    lines = [line.strip() for line in text.splitlines() if line.strip()][:4]
    return InputError(f"--ckpt_path {ckpt} does not fit the model of this config (a model.* option differs from "
                      f"the checkpoint's?): " + " ".join(lines))


DATA_HOOKS = ("prepare_data", "setup", "train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader")


def _data_input_error(error: BaseException) -> InputError | None:
    """A ``ValueError`` / ``FileNotFoundError`` raised while a data module reads and checks its input (in
    ``prepare_data``, ``setup`` or a ``*_dataloader`` hook: e.g. too little video for a split, a missing data
    file, fewer clips than processes) is bad input: its message names the data and what to change."""
    if not isinstance(error, (ValueError, FileNotFoundError)):
        return None
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        dm = frame.f_locals.get("self")
        if frame.f_code.co_name in DATA_HOOKS and isinstance(dm, LightningDataModule):
            message, videos = str(error), getattr(dm, "videos", None)
            if videos is not None and str(videos) not in message:
                message += f" (data.init_args.videos: {videos})"
            return InputError(message)
        tb = tb.tb_next
    return None


def run(argv: list[str]) -> int:
    """Run ``framecast fit|validate|test|predict`` (``argv`` starts with the subcommand)."""
    try:
        FramecastCLI(
            FramePredictionModule,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            args=argv,
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False},
        )
    except (ValueError, FileNotFoundError) as e:
        if bad_input_cause(e) is not None:
            raise
        converted = _data_input_error(e)
        if converted is None:
            raise
        raise converted from e
    except RuntimeError as e:
        mismatch = _mismatch(e, argv)
        if mismatch is None:
            raise
        raise mismatch from e
    return 0
