"""What ``framecast benchmark`` scores, from its command line: the candidates and the data.

* the command line: :func:`with_data_section` puts a data section first where ``--config`` gives none (the
  video module for ``--video``, else the first checkpoint's), so ``--data.init_args.KEY`` applies on top;
  :func:`parse_checkpoints` reads ``PATH`` / ``NAME=PATH`` (the rest is :mod:`framecast.cli.data`);
* :func:`load_candidates`: every checkpoint (loaded safely, :func:`framecast.loading.load_module`) and
  baseline as a :class:`framecast.evaluation.Candidate`;
* :func:`build_datamodule`: the data (``--video``, ``--config``'s data section or the first checkpoint's), and
  :func:`check_compatible`: every checkpoint's channels and frame size are the data's;
* :func:`all_clips`: ``--split all``, every clip of every video cut by time, in two halves, each scored with the
  Laplace scales fitted on the other.

Every problem is an :class:`~framecast.errors.InputError` or :class:`~framecast.errors.ConfigError` naming the
file or option.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from framecast.cli import data
from framecast.cli.data import flag_values, has_config
from framecast.errors import ConfigError, InputError
from framecast.evaluation.run import Candidate

__all__ = ["all_clips", "build_datamodule", "check_compatible", "has_config", "load_candidates",
           "parse_checkpoints", "with_data_section"]


# --- the command line ----------------------------------------------------------------------------------


def parse_checkpoints(specs: Sequence[str]) -> list[tuple[str | None, Path]]:
    """``PATH`` or ``NAME=PATH`` -> ``(name or None, path)``."""
    out = []
    for spec in specs:
        name, path = None, spec
        if "=" in spec and not Path(spec).exists():
            name, path = spec.split("=", 1)
        out.append((name or None, Path(path)))
    return out


def with_data_section(argv: list[str]) -> list[str]:
    """``argv`` with a data section first where ``--config`` gives none: the video module with ``--video``,
    else the first checkpoint's (:func:`framecast.cli.data.with_data_section`)."""
    specs = parse_checkpoints(flag_values(argv, "--ckpt_path"))
    return data.with_data_section(argv, checkpoint=str(specs[0][1]) if specs else None)


# --- candidates and data -------------------------------------------------------------------------------


def load_candidates(checkpoints: Sequence[tuple[str | None, Path]], baselines: Sequence[str],
                    device: str | torch.device = "cpu") -> list[Candidate]:
    """Every checkpoint (named ``NAME=`` or by its model and file) and baseline as a candidate."""
    from framecast.loading import load_module

    candidates: list[Candidate] = []
    for name, path in checkpoints:
        try:
            module = load_module(path, map_location=device)
        except (FileNotFoundError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"--ckpt_path: {e}") from e
        hp = dict(module.hparams)
        label = f"{path.parent.parent.name}/{path.stem}" if path.parent.name == "checkpoints" else path.stem
        candidates.append(Candidate(name=name or f"{hp.get('model', 'model')}:{label}", kind="checkpoint",
                                    model=module.model.eval(), checkpoint=str(path), hparams=hp,
                                    data_hparams=module.data_hparams))
    names = [c.name for c in candidates]
    for i, c in enumerate(candidates):  # checkpoints with the same default name get a counter
        if names.count(c.name) > 1:
            c.name = f"{c.name} #{i + 1}"
    candidates += [Candidate.baseline(b) for b in baselines]
    names = [c.name for c in candidates]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--ckpt_path: two predictors are named {dup}: name checkpoints with NAME=PATH")
    if not candidates:
        raise ConfigError("nothing to benchmark: give --ckpt_path and/or --baselines")
    return candidates


def check_compatible(candidates: Sequence[Candidate], dm) -> None:
    """Every checkpoint's channels and frame size (as trained) must be the data's."""
    from framecast.loading import frame_size_of

    c, size = int(dm.channels), tuple(int(s) for s in dm.size)
    problems = []
    for e in candidates:
        if e.kind != "checkpoint":
            continue
        ec = int(e.hparams.get("channels", c))
        esize = frame_size_of(e.data_hparams) or size
        if ec != c or tuple(esize) != size:
            problems.append(f"checkpoint {e.checkpoint} was trained on {ec}-channel {esize[0]}x{esize[1]} frames, "
                            f"but the data has {c}-channel {size[0]}x{size[1]} frames")
            continue
        p = int(e.hparams.get("patch_size", 1))
        if size[0] % p or size[1] % p:
            problems.append(f"checkpoint {e.checkpoint}: frame size {size[0]}x{size[1]} is not divisible by its "
                            f"patch_size {p}")
    if problems:
        raise InputError("checkpoint and data do not match:\n  " + "\n  ".join(problems)
                         + "\n(give data like the checkpoint's training data: data.init_args.channels and the frame "
                           "size, or neither --config nor --video for the checkpoint's own data)")


def build_datamodule(cfg, argv: Sequence[str], candidates: Sequence[Candidate]):
    """The data of a parsed command line (:func:`framecast.cli.data.build_datamodule`): ``--video`` clipped like
    the first checkpoint's training clips, else the data section (of ``--config``, or the first checkpoint's)."""
    first = next((c for c in candidates if c.kind == "checkpoint"), None)
    if first is None and not cfg.get("video") and not (cfg.get("data") or {}).get("class_path"):
        raise ConfigError("no data: give --config FILE (a fit config) or --video PATH; baselines alone know no data")
    return data.build_datamodule(cfg, argv, like=first, checkpoint=first.checkpoint if first else None)


def all_clips(dm) -> list:
    """``--split all``: every clip of every video of ``dm`` (a :class:`~framecast.data.VideoClipDataModule`), cut
    by time without overlap (clip ``k`` of a video is its frames ``k L .. k L + L - 1``, ``L`` = context + horizon),
    as two copies of ``dm``: the first scores (``test``) the first half of each video's clips and fits the Laplace
    scales on (``val``) the second half, the second the other way round. Every clip is scored once, never with
    scales fitted on it (two-fold cross-fitting); a static stretch at a video's start does not decide the scales.
    Each video needs at least two clips."""
    import copy

    if not all(hasattr(dm, a) for a in ("windows", "video_paths", "clip_frames", "prepare_data", "_entries")):
        raise ConfigError(f"--split all cuts every video by time: it needs video data (--video PATH or a config "
                          f"with framecast.data.VideoClipDataModule), not {type(dm).__name__}")
    try:
        dm.prepare_data()  # decode (or find in the cache) every video
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot load the data: {e}") from e
    length = int(dm.clip_frames)
    halves: list[list[tuple[int, int]]] = [[], []]
    for v, path in enumerate(dm.video_paths):
        starts = list(range(0, dm._entries[v].num_frames - length + 1, length))
        if len(starts) < 2:
            raise InputError(f"{path}: {len(starts)} clip(s) of {length} frames, but --split all needs at least two "
                             f"per video (each half is scored with the Laplace scales fitted on the other): use a "
                             f"longer video or shorter clips (data.init_args.context_*/horizon_*)")
        half = len(starts) // 2
        halves[0] += [(v, s) for s in starts[:half]]
        halves[1] += [(v, s) for s in starts[half:]]
    parts = []
    for scored, fitted in ((halves[0], halves[1]), (halves[1], halves[0])):
        part = copy.copy(dm)  # shares the decoded videos; its own clips and datasets
        part.windows = {"train": [], "val": list(fitted), "test": list(scored)}
        part.videos_by_split = {s: sorted({dm.video_paths[v] for v, _ in part.windows[s]}) for s in part.windows}
        part._datasets = {}
        parts.append(part)
    return parts
