"""The one command grammar: every ``framecast`` command parses its options with the same parser.

Every command understands what ``framecast fit`` understands, with Lightning's names::

    --config FILE                      the same fit config everywhere (each command reads what it needs)
    --data.init_args.KEY VALUE         a data module option (``--data.KEY`` works too)
    --model.KEY VALUE                  a training module / predictor option
    --trainer.KEY VALUE                a Lightning ``Trainer`` option
    --ckpt_path CKPT                   a checkpoint
    --seed_everything N                the seed
    --print_config                     print the resolved config and exit
    --help                             every option with its type and default

:func:`tool_parser` builds that parser (a ``LightningArgumentParser``, i.e. jsonargparse) for a command, which
then adds its own options; :func:`parse` parses ``argv`` (old flag spellings rewritten by :func:`rewrite_aliases`)
and turns a usage error into :class:`~framecast.errors.ConfigError` (exit code 2, no traceback);
:func:`instantiate_data` and :func:`instantiate_module` build only the section a command needs, with a
constructor's own message (which names the field) as the error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from framecast.errors import ConfigError

# The sections of a ``framecast fit`` config besides model / data / trainer.
FIT_SECTIONS = ("checkpoint", "summary", "prediction")


def tool_parser(prog: str, description: str, data_required: bool = False, several_checkpoints: bool = False):
    """A parser with every section of a fit config (so ``--config`` takes the fit config as it is).

    ``several_checkpoints``: ``--ckpt_path CKPT [CKPT ...]`` takes one or more checkpoints (a list, also
    when repeated) instead of one (``str | None``)."""
    from jsonargparse import ActionConfigFile
    from lightning import LightningDataModule, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser

    from framecast.callbacks import FitSummary, PredictionWriter
    from framecast.module import FramePredictionModule

    parser = LightningArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile,
                        help="a framecast YAML config (the fit config: each command reads the sections it needs)")
    parser.add_argument("--seed_everything", type=bool | int, default=0, help="seed of every random draw")
    if several_checkpoints:
        parser.add_argument("--ckpt_path", type=str, nargs="+", action="extend", default=[], metavar="CKPT",
                            help="checkpoints written by framecast fit (PATH or NAME=PATH); several allowed, and "
                                 "one NAME on several: seeds of one candidate")
    else:
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="a checkpoint written by framecast fit")
    parser.add_lightning_class_args(FramePredictionModule, "model")
    parser.add_lightning_class_args(LightningDataModule, "data", subclass_mode=True, required=data_required)
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
    parser.add_lightning_class_args(FitSummary, "summary")
    parser.add_lightning_class_args(PredictionWriter, "prediction")
    int_before_float(parser)
    return parser


def int_before_float(parser) -> None:
    """``Trainer``'s ``limit_*_batches`` are typed ``float | int | None``: jsonargparse then reads ``1`` as
    ``1.0`` (all batches). Read an integer as a number of batches and a decimal as a fraction, as Lightning
    documents them (``--trainer.limit_val_batches 1``: one batch; ``1.0``: all)."""
    import typing

    for action in parser._actions:
        hint = getattr(action, "_typehint", None)
        if action.dest.startswith("trainer.") and hint == float | int | None and typing.get_args(hint)[0] is float:
            action._typehint = int | float | None


def rewrite_aliases(argv: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """Old spellings of flags -> the documented ones (``--seed 3`` -> ``--seed_everything 3``, also ``--seed=3``)."""
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        if name in aliases:
            out.append(aliases[name] + (eq + value if eq else ""))
        else:
            out.append(a)
    return out


def parse(parser, argv: Sequence[str] | None = None, aliases: Mapping[str, str] | None = None):
    """Parse ``argv``; a usage error (unknown option, bad value, missing file) -> :class:`ConfigError`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if aliases:
        argv = rewrite_aliases(argv, aliases)
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(f"{_first_lines(str(e))}\n(see {parser.prog} --help)") from e


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit]) + ("\n  ..." if len(lines) > limit else "")


def _unwrap(error: BaseException) -> BaseException:
    """jsonargparse buries a constructor's message under its own wrappers: the innermost ValueError/TypeError
    (not past one raised ``from None``, whose message replaces the one it was raised in)."""
    def below(e: BaseException):
        return e.__cause__ or (None if e.__suppress_context__ else e.__context__)

    inner = error
    while isinstance(below(inner), (ValueError, TypeError)):
        inner = below(inner)
    return inner


def instantiate_data(cfg, section: str = "data"):
    """The data module of a parsed config (``None`` where the config has none)."""
    spec = cfg.get(section)
    if spec is None or not spec.get("class_path"):
        return None
    from jsonargparse import ArgumentParser
    from lightning import LightningDataModule

    p = ArgumentParser(exit_on_error=False)
    p.add_subclass_arguments(LightningDataModule, section)
    try:
        return p.instantiate(p.parse_object({section: spec.as_dict() if hasattr(spec, "as_dict") else spec}))[section]
    except (ValueError, TypeError, argparse.ArgumentError) as e:
        from framecast.errors import bad_input_cause

        if bad_input_cause(e) is not None:
            raise
        raise ConfigError(f"{section}: {_unwrap(e)}") from e


def instantiate_module(cfg, section: str = "model"):
    """The :class:`~framecast.module.FramePredictionModule` of a parsed config's ``model`` section."""
    from framecast.module import FramePredictionModule

    options = cfg.get(section)
    options = options.as_dict() if hasattr(options, "as_dict") else dict(options or {})
    try:
        return FramePredictionModule(**options)
    except (ValueError, TypeError) as e:
        from framecast.errors import bad_input_cause

        if bad_input_cause(e) is not None:
            raise
        raise ConfigError(str(_unwrap(e))) from e


def section_dict(cfg, section: str) -> dict[str, Any]:
    value = cfg.get(section)
    return value.as_dict() if hasattr(value, "as_dict") else dict(value or {})


def _flag_value(argv: Sequence[str], names: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        name, eq, value = a.partition("=")
        if name in names:
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def with_checkpoint_data(argv: Sequence[str], ckpt_flags: Sequence[str] = ("--ckpt_path",)) -> list[str]:
    """``argv`` with the data section a checkpoint was trained on put first (``--data=JSON``), where neither a
    ``--config`` nor a ``--data`` class is given: the checkpoint knows its data, and ``--data.init_args.KEY``
    overrides then apply on top of it."""
    import json

    argv = list(argv)
    if any(a.partition("=")[0] in ("-c", "--config", "--data") for a in argv):
        return argv
    ckpt = _flag_value(argv, ckpt_flags)
    if not ckpt:
        return argv
    from pathlib import Path

    if not Path(ckpt).is_file():
        return argv  # the command reports the missing file, naming it
    from framecast.loading import init_args, saved_data_args

    saved = saved_data_args(ckpt)
    if not saved.get("_class_path"):
        return argv
    spec = {"class_path": saved["_class_path"], "init_args": init_args(saved)}
    return [f"--data={json.dumps(spec)}"] + argv
