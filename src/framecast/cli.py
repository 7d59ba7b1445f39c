"""The ``framecast`` command.

``fit | validate | test | predict`` go to Lightning's CLI (YAML configs, ``--key value`` overrides);
``fit`` with no ``--config`` trains the quickstart. The other commands have their own modules.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from importlib import resources
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = {  # command -> (module with main(argv) -> int, one-line help)
    "prepare": ("framecast.prepare", "decode videos into the frame cache, with a progress bar"),
    "visualize": ("framecast.visualize", "pictures of what a model knows: comparisons, videos, surprise, hidden state"),
    "benchmark": ("framecast.benchmark", "every metric per horizon step for checkpoints and baselines"),
    "benchmark-losses": ("framecast.benchmark_losses", "train one model per loss, then benchmark them side by side"),
    "speed": ("framecast.speed", "training and inference throughput, memory and FLOP/s as JSON"),
}

HELP = """usage: framecast COMMAND [options]   (framecast COMMAND --help for a command's options)

Video next-frame prediction: train, inspect and benchmark predictors.

Training (Lightning's CLI; options from --config FILE and --section.key value):
  fit                 train a model (no --config: the quickstart, builtin moving digits, a few minutes on CPU)
  validate            evaluate a checkpoint on the validation split (--ckpt_path CKPT)
  test                evaluate a checkpoint on the test split (--ckpt_path CKPT)
  predict             run a checkpoint on the test split (--ckpt_path CKPT)

Tools:
{tools}

Configs shipped with framecast: {configs}
"""


def config_dir() -> Path:
    """The folder of configs shipped with the package (``configs/`` of the repository)."""
    return Path(str(resources.files("framecast") / "configs"))


def quickstart_config() -> Path:
    return config_dir() / "quickstart.yaml"


def has_config(argv: list[str]) -> bool:
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in argv)


def run_lightning(argv: list[str]) -> int:
    from lightning import LightningDataModule
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from framecast.callbacks import FitSummary
    from framecast.checkpoints import find_last_checkpoint, refusal, use_safe_checkpoint_io
    from framecast.checks import check_model_and_data
    from framecast.module import FramePredictionModule

    class FramecastCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": True})
            parser.add_lightning_class_args(FitSummary, "summary")
            parser.link_arguments("data.channels", "model.channels", apply_on="instantiate")

        def _parse_ckpt_path(self):  # Lightning reads --ckpt_path's hyper-parameters (weights_only) first
            try:
                super()._parse_ckpt_path()
            except pickle.UnpicklingError as e:
                raise refusal(self.config[self.config.subcommand].get("ckpt_path"), e) from None

        def instantiate_classes(self):
            try:
                super().instantiate_classes()
            except ValueError as e:  # jsonargparse buries a constructor's message in a Union error: surface it
                cause = e
                while isinstance(cause.__cause__ or cause.__context__, ValueError):
                    cause = cause.__cause__ or cause.__context__
                if cause is e:
                    raise
                raise ValueError(str(cause)) from e

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            use_safe_checkpoint_io(trainer)  # --ckpt_path is only ever loaded with weights_only=True
            return trainer

        def _before(self, stage: str) -> None:
            check_model_and_data(self.model, self.datamodule, stage)  # before any data is decoded
            config = self.config_init[self.subcommand]
            if "weights_only" in config:
                config["weights_only"] = True
            if stage == "fit" and config.get("ckpt_path") == "last":
                last = find_last_checkpoint(self.trainer)
                if last is not None:
                    config["ckpt_path"] = str(last)
                    print(f"resuming from {last}")

        def before_fit(self):
            self._before("fit")

        def before_validate(self):
            self._before("validate")

        def before_test(self):
            self._before("test")

        def before_predict(self):
            self._before("predict")

    FramecastCLI(
        FramePredictionModule,
        LightningDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=argv,
        auto_configure_optimizers=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        tools = "\n".join(f"  {name:<19} {text}" for name, (_, text) in COMMANDS.items())
        configs = ", ".join(sorted(p.stem for p in config_dir().glob("*.yaml")))
        print(HELP.format(tools=tools, configs=configs))
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return importlib.import_module(COMMANDS[command][0]).main(rest) or 0
    if command in LIGHTNING_COMMANDS:
        if command == "fit" and not has_config(rest) and not {"-h", "--help"} & set(rest):
            print(f"no --config given: training the quickstart ({quickstart_config()})")
            rest = ["--config", str(quickstart_config())] + rest
        return run_lightning([command] + rest)
    print(f"framecast: unknown command {command!r}; commands: {', '.join(LIGHTNING_COMMANDS + tuple(COMMANDS))}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
