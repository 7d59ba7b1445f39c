"""The ``framecast`` command: the dispatcher and its help.

``fit | validate | test | predict`` go to Lightning's CLI (:mod:`framecast.cli.train`); ``fit`` with no
``--config`` trains the quickstart. The other commands have their own modules (:data:`COMMANDS`). Every
command runs under the one exit-code rule (:func:`framecast.errors.run_command`) and the same grammar
(:mod:`framecast.cli.grammar`), with Lightning's start-up chatter left out (:func:`quiet_startup`).
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from importlib import resources
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = {  # command -> (module with main(argv) -> int, one-line help)
    "prepare": ("framecast.prepare", "decode videos into the frame cache in parallel (or into LitData chunks), with a progress bar"),
    "visualize": ("framecast.viz.command", "pictures of what a model knows: comparisons, videos, surprise, hidden state"),
    "benchmark": ("framecast.evaluation.benchmark", "every metric per horizon step for checkpoints and baselines"),
    "benchmark-losses": ("framecast.benchmark_losses", "train one model per loss, then benchmark them side by side"),
    "speed": ("framecast.profiling.command", "training and inference throughput, memory and FLOP/s as JSON"),
    "forecast": ("framecast.forecasting.command", "forecast a video past its end (or --at): mp4, npy, sampled futures"),
    "codelength": ("framecast.prequential.command", "prequential codelength: how well predictors compress the stream"),
}

HELP = """usage: framecast COMMAND [options]   (framecast COMMAND --help for a command's options)

Video next-frame prediction: train, inspect and benchmark predictors.

Training (Lightning's CLI; options from --config FILE and --section.key value):
  fit                 train a model (no --config: the quickstart, builtin moving digits, a few minutes on CPU)
  validate            evaluate a checkpoint on the validation split (--ckpt_path CKPT)
  test                evaluate a checkpoint on the test split (--ckpt_path CKPT)
  predict             predict the test split with a checkpoint (--ckpt_path CKPT): uint8 .npy arrays

Tools:
{tools}

Every command takes the same options: --config FILE (a fit config), --data.init_args.KEY VALUE,
--model.KEY VALUE, --trainer.KEY VALUE, --ckpt_path CKPT, --seed_everything N, --print_config, --help.
Exit code 0: done; 2: bad input or usage (one message; FRAMECAST_DEBUG=1 adds the traceback); 1: a failure.

Configs shipped with framecast: {configs}
"""

# Lightning's start-up lines that tell nothing about the run (its real warnings are kept)
NOISE = (
    "GPU available:", "TPU available:", "HPU available:", "IPU available:", "Seed set to", "💡 Tip:",
    "LOCAL_RANK:", "Loading `train_dataloader` to estimate number of stepping batches", "Missing logger folder:",
    "Using bfloat16 Automatic Mixed Precision",  # fit prints its own line: the precision and why
)
NOISE_PATTERN = "`Trainer("  # "`Trainer(limit_val_batches=1)` was configured so 1 batch will be used."
NOISE_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning_utilities.core.rank_zero",
    "lightning.fabric.utilities.seed", "lightning.pytorch.accelerators.cuda", "lightning.fabric.loggers.tensorboard",
    "lightning.pytorch.loggers.tensorboard",
)
NOISE_WARNINGS = (  # (message regex, module regex) of warnings that are about library versions, not the run
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", ""),
)


class _StartupNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = str(record.getMessage()).lstrip()
        except Exception:  # noqa: BLE001  (a record that cannot be formatted is not ours to judge)
            return True
        if text.startswith(NOISE):
            return False
        return not (text.startswith(NOISE_PATTERN) and "was configured so" in text)


_FILTER = _StartupNoise()


def quiet_startup() -> None:
    """Leave Lightning's start-up chatter out of every command's output (idempotent)."""
    for name in NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message, module in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


def config_dir() -> Path:
    """The folder of configs shipped with the package (``configs/`` of the repository)."""
    return Path(str(resources.files("framecast") / "configs"))


def quickstart_config() -> Path:
    return config_dir() / "quickstart.yaml"


def has_config(argv: list[str]) -> bool:
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in argv)


def run_lightning(argv: list[str]) -> int:
    """``framecast fit|validate|test|predict`` in this process (``argv`` starts with the subcommand); raises
    on errors (:func:`main` turns them into exit codes)."""
    quiet_startup()
    from framecast.cli.train import run

    return run(argv)


def _help() -> int:
    tools = "\n".join(f"  {name:<19} {text}" for name, (_, text) in COMMANDS.items())
    configs = ", ".join(sorted(p.stem for p in config_dir().glob("*.yaml")))
    print(HELP.format(tools=tools, configs=configs))
    return 0


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        return _help()
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return importlib.import_module(COMMANDS[command][0]).main(rest) or 0
    if command in LIGHTNING_COMMANDS:
        if command == "fit" and not has_config(rest) and not {"-h", "--help"} & set(rest):
            if not any(a.startswith("--print_config") for a in rest):  # (that prints YAML only)
                print(f"no --config given: training the quickstart ({quickstart_config()})")
            rest = ["--config", str(quickstart_config())] + rest
        return run_lightning([command] + rest)
    print(f"framecast: unknown command {command!r}; commands: {', '.join(LIGHTNING_COMMANDS + tuple(COMMANDS))}",
          file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast`` with ``argv`` (default ``sys.argv[1:]``); return the exit code (see :mod:`framecast.errors`)."""
    from framecast.errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_startup()
    prog = f"framecast {argv[0]}" if argv and not argv[0].startswith("-") else "framecast"
    return run_command(prog, lambda: _dispatch(argv))


if __name__ == "__main__":
    sys.exit(main())
