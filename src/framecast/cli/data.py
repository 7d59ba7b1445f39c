"""The data a command works on, in the one grammar: ``--config``'s data section, clips of ``--video`` cut like
a checkpoint's training clips, or (with neither) the data the checkpoint was trained on; ``--data.init_args.KEY``
options apply on top of any of them.

* :func:`with_data_section`: ``argv`` with a data section put first where ``--config`` gives none, so that the
  parser accepts ``--data.init_args.KEY`` overrides;
* :func:`build_datamodule`: the data module of the parsed command line;
* :func:`flag_values`, :func:`has_config`, :func:`data_keys`: what the command line says, before parsing.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from typing import Any

from framecast.cli.grammar import instantiate_data, section_dict, with_checkpoint_data
from framecast.errors import ConfigError, InputError, bad_input_cause

VIDEO_CLASS = "framecast.data.video.VideoClipDataModule"


def flag_values(argv: Sequence[str], flag: str) -> list[str]:
    """Every value given to ``flag`` on the command line (``--flag A B``, ``--flag=A``, repeated)."""
    out: list[str] = []
    for i, a in enumerate(argv):
        name, eq, value = a.partition("=")
        if name != flag:
            continue
        if eq:
            out.append(value)
            continue
        for b in argv[i + 1:]:
            if b.startswith("-"):
                break
            out.append(b)
    return out


PRINT_CONFIG_FLAGS = {"comments", "skip_default", "skip_null"}


def option_groups(argv: Sequence[str], no_value: Sequence[str] = ("-h", "--help")) -> list[list[str]]:
    """``argv`` cut into options with their value (``--key value`` kept together, ``--key=value`` and the flags
    ``no_value`` alone; ``--print_config`` takes a value only where it is one of its flags), in order."""
    argv = list(argv)
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        name, eq, _ = a.partition("=")
        if eq or name in no_value or not a.startswith("-"):
            n = 1
        elif name == "--print_config":
            n = 2 if i + 1 < len(argv) and set(argv[i + 1].split(",")) <= PRINT_CONFIG_FLAGS else 1
        else:
            n = 2
        out.append(argv[i : i + n])
        i += n
    return out


def has_config(argv: Sequence[str]) -> bool:
    return any(a.partition("=")[0] in ("-c", "--config") for a in argv)


def data_keys(argv: Sequence[str]) -> set[str]:
    """The data options given on the command line (``--data.init_args.KEY`` or ``--data.KEY``)."""
    keys = set()
    for a in argv:
        name = a.partition("=")[0]
        if name.startswith("--data."):
            key = name.removeprefix("--data.").removeprefix("init_args.")
            if key not in ("class_path", "init_args"):
                keys.add(key)
    return keys


def config_first(argv: Sequence[str]) -> list[str]:
    """``--config FILE`` moved before every other option, so ``--data.init_args.KEY`` given anywhere applies
    on top of the config's data section."""
    argv = list(argv)
    first, rest, i = [], [], 0
    while i < len(argv):
        name = argv[i].partition("=")[0]
        if name in ("-c", "--config"):
            take = 1 if "=" in argv[i] else 2
            first += argv[i:i + take]
            i += take
        else:
            rest.append(argv[i])
            i += 1
    return first + rest


def with_data_section(argv: Sequence[str], checkpoint: str | None = None) -> list[str]:
    """``argv`` with a data section first where ``--config`` gives none: the video module with ``--video``,
    else the data of ``checkpoint`` (default: the first value of ``--ckpt_path``)."""
    argv = config_first(argv)
    if has_config(argv):
        return argv
    video = flag_values(argv, "--video")
    if video:
        return [f"--data={json.dumps({'class_path': VIDEO_CLASS, 'init_args': {'videos': video[0]}})}"] + argv
    if checkpoint is None:
        specs = flag_values(argv, "--ckpt_path")
        if not specs:
            return argv
        checkpoint = specs[0].split("=", 1)[1] if "=" in specs[0] and not _exists(specs[0]) else specs[0]
    probe = ["--ckpt_path", str(checkpoint)]
    try:
        out = with_checkpoint_data(probe)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError):
        return argv  # an unsafe or corrupt checkpoint: loading it says so, naming it
    return out[: len(out) - len(probe)] + argv


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()


def build_datamodule(cfg, argv: Sequence[str], like: Any = None, checkpoint: str | None = None):
    """The data of a parsed command line: ``--video`` (``cfg.video``) clipped like ``like``'s training clips
    (a loaded module or a :class:`~framecast.evaluation.Candidate`: anything with ``data_hparams`` and
    ``hparams``), else the data section (of ``--config``, or ``checkpoint``'s), ``--data.init_args`` applied."""
    from framecast import loading

    if cfg.get("video"):
        if has_config(argv):
            raise ConfigError("give --config or --video, not both")
        args = section_dict(cfg, "data").get("init_args") or {}
        args = args.as_dict() if hasattr(args, "as_dict") else dict(args)
        given = {k: args[k] for k in data_keys(argv) if k in args and k != "videos"}
        try:
            return loading.datamodule_for_video(cfg.video, like=like, **given)
        except (ValueError, TypeError) as e:
            if bad_input_cause(e) is not None:
                raise
            raise ConfigError(f"data (for --video {cfg.video}): {e}") from e
    data = cfg.get("data")
    if data is None or not data.get("class_path"):
        if has_config(argv):
            raise ConfigError("the --config file has no data: section; give a fit config, --video PATH or no "
                              "--config (the checkpoint's data)")
        if checkpoint is None:
            raise ConfigError("no data: give --config FILE (a fit config) or --video PATH")
        try:
            return loading.datamodule_from_checkpoint(checkpoint, getattr(like, "data_hparams", None))
        except ValueError as e:
            if bad_input_cause(e) is not None:
                raise
            raise InputError(f"--ckpt_path: {e}") from e
    return instantiate_data(cfg)
