"""``framecast visualize``: pictures and videos of what a trained model knows.

    framecast visualize --ckpt_path CKPT [--config FILE | --video PATH] [--data.init_args.KEY VALUE] --out DIR
                        [--clips N] [--split test] [--dream-factor K] [--curve-clips M] [--fps F]
                        [--scale S] [--device D] [--seed_everything N] [--print_config]

The options every framecast command understands (:mod:`framecast.cli.grammar`) plus this command's own;
``--ckpt`` is the old spelling of ``--ckpt_path``. For the first ``N`` clips of the split it writes

* ``comparison_<i>.png``: context, ground truth, prediction and absolute error over time;
* ``side_by_side_<i>.mp4`` (H.264, yuv420p) and ``side_by_side_<i>.gif``: truth | prediction | error, the
  whole clip; a blue border and the word CONTEXT mark the frames the model was given (its prediction panel
  then shows its one-step prediction from the true frames before), an orange border and PREDICTED the
  frames it rolled out on its own;
* ``surprise_<i>.png``: per-pixel bits of the true frame under the model's distribution (models with a
  ``logistic_mixture`` head), else the per-pixel squared error;
* ``hidden_<i>.png``: the top recurrent layer's state at every step, projected on its first three principal
  components (fitted on that clip) as RGB;
* ``dream_<i>.mp4``: a rollout ``K`` times the trained horizon beside the truth while the data has it (a
  purple border marks the frames beyond the trained horizon);
* ``flow_<i>.png`` (a model whose head warps, ``head: warp`` or ``warp_mixture``): the motion field of every
  step in the colour-wheel convention, with its legend (:mod:`framecast.viz.flow`);

and ``curves.png`` with ``curves.json``: ``mse_frame`` and SSIM per frame ahead for the model and the
copy-last baseline over the first ``M`` clips of the split, from :func:`framecast.evaluation.evaluate`.

Data: ``--config`` (the ``data:`` section of a fit config), ``--video`` (clips of a video file or folder, cut
like the model's training clips) or, with neither, the data module saved in the checkpoint; in every case
``--data.init_args.KEY VALUE`` overrides one of its options.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from framecast.cli import data as cli_data
from framecast.cli.data import data_keys, has_config, with_data_section
from framecast.cli.grammar import parse, rewrite_aliases, tool_parser
from framecast.errors import ConfigError, InputError
from framecast.viz.clips import SPLITS

PROG = "framecast visualize"
ALIASES = {"--ckpt": "--ckpt_path", "--dream_factor": "--dream-factor", "--curve_clips": "--curve-clips"}
DEFAULT_PLAYBACK_FPS = 4.0  # for data without a frame rate (moving digits): slow enough to follow
DESCRIPTION = """Pictures and videos of what a trained model knows: comparison grids, side-by-side videos (MP4
and GIF), error curves against copy-last, surprise maps, the hidden state and a long 'dream' rollout.
Files written to --out, for each clip i: comparison_<i>.png (context / truth / prediction / |error|),
side_by_side_<i>.mp4 and .gif (truth | prediction | |error|; blue CONTEXT, orange PREDICTED frames),
surprise_<i>.png (bits under the model's distribution, else squared error), hidden_<i>.png (top layer's state,
3 principal components as RGB), dream_<i>.mp4 (a rollout --dream-factor times the trained horizon); and
curves.png, curves.json (mse_frame and SSIM per frame ahead, model vs. copy-last). Data: --config (its data
section), --video (clips cut like the checkpoint's), else the checkpoint's own; --data.init_args.KEY VALUE
overrides an option of it. --ckpt is the old spelling of --ckpt_path."""


# --- the grammar ----------------------------------------------------------------------------------------


def build_parser():
    """The parser of every framecast command (:func:`framecast.cli.grammar.tool_parser`) plus this one's."""
    parser = tool_parser(PROG, DESCRIPTION)
    parser.add_argument("--video", type=str | None, default=None,
                        help="video file or folder: clips cut like the model's training clips (not with --config)")
    parser.add_argument("--out", type=str | None, default=None, help="output folder (required)")
    parser.add_argument("--clips", type=int, default=4, help="clips to draw: the first N of the split")
    parser.add_argument("--split", type=Literal[SPLITS], default="test", help="split the clips come from")
    parser.add_argument("--dream-factor", type=int, default=4,
                        help="the dream rolls out this many times the trained horizon")
    parser.add_argument("--curve-clips", type=int, default=128,
                        help="the error curves average over the first M clips of the split")
    parser.add_argument("--fps", type=float | None, default=None,
                        help=f"playback rate of the videos (default: the data's fps, else {DEFAULT_PLAYBACK_FPS:g})")
    parser.add_argument("--scale", type=int | None, default=None,
                        help="nearest-neighbour upscale of the video panels (default: to about 192 pixels)")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, ... (auto: cuda where available)")
    return parser


def check_options(clips: int = 4, dream_factor: int = 4, curve_clips: int = 128, fps: float | None = None,
                  scale: int | None = None) -> None:
    """A value that cannot work -> :class:`ConfigError` naming the option."""
    for flag, value in (("--clips", clips), ("--dream-factor", dream_factor), ("--curve-clips", curve_clips)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if fps is not None and not fps > 0:
        raise ConfigError(f"--fps must be > 0, got {fps}")
    if scale is not None and scale < 1:
        raise ConfigError(f"--scale must be >= 1, got {scale}")


def load(ckpt: str | None, device: str):
    """The module of ``--ckpt_path`` on ``device`` (:func:`framecast.loading.load_module`)."""
    from framecast.loading import load_module

    if not ckpt:
        raise ConfigError("--ckpt_path is required: a checkpoint written by framecast fit")
    try:
        return load_module(ckpt, map_location=device)
    except FileNotFoundError as e:
        raise InputError(f"--ckpt_path: {e}") from e
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"--ckpt_path: {e}") from e


def build_datamodule(cfg, module, argv: Sequence[str]):
    """The data of a parsed command line (:func:`framecast.cli.data.build_datamodule`); a checkpoint's own
    data reads its few clips without loader processes unless ``--data.init_args.num_workers`` says otherwise."""
    data = cfg.get("data")
    if (data is not None and not has_config(argv) and "num_workers" not in data_keys(argv)
            and "num_workers" in (data.get("init_args") or {})):
        data.init_args.num_workers = 0  # for a few clips of pictures loader processes cost more than they save
    return cli_data.build_datamodule(cfg, argv, like=module, checkpoint=cfg.ckpt_path)


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device: {e}") from e
    return name


# --- every file for a set of clips ----------------------------------------------------------------------


def visualize(module, dm, out: str | Path, clips: int = 4, dream_factor: int = 4, split: str = "test",
              curve_clips: int = 128, playback_fps: float | None = None, scale: int | None = None,
              progress: bool | None = None, log=print) -> list[Path]:
    """Write every picture and video of ``framecast visualize`` for the first ``clips`` clips of ``split`` of
    ``dm`` into ``out``; return the paths written."""
    from tqdm.auto import tqdm

    from framecast.loading import shrink
    from framecast.viz import analysis, figures
    from framecast.viz.clips import dream_clips, first_clips, loader
    from framecast.viz.codecs import write_gif, write_mp4
    from framecast.viz.render import clip_video

    check_options(clips, dream_factor, curve_clips, playback_fps, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_fps = getattr(dm, "fps", None)
    play = playback_fps or data_fps or DEFAULT_PLAYBACK_FPS
    name = analysis.model_name(module)
    written: list[Path] = []
    from framecast.models.warp import is_warp_head

    head = getattr(analysis.predictor_of(module), "head", None)
    warps = head is not None and is_warp_head(head)
    bar = tqdm(total=2 + (7 if warps else 6) * clips, desc="visualize", unit="file", disable=progress is False)

    def done(path: Path) -> None:
        written.append(path)
        bar.update(1)

    dm = shrink(dm, split, max(clips, curve_clips))
    context, target = first_clips(dm, clips, split)
    n = len(context)
    t_ctx, horizon = context.shape[1], target.shape[1]
    roll = analysis.rollout(module, context, horizon)

    errors = analysis.error_curves(module, loader(dm, split), curve_clips, name=name, progress=progress is not False)
    fig = figures.curves_figure(errors.curves(data_fps), xlabel=errors.xlabel(data_fps),
                                labels={name: f"model ({name})"},
                                title=f"error per frame ahead, mean over the first {errors.clips} {split} clips")
    done(figures.save(fig, out / "curves.png"))
    curves_json = out / "curves.json"
    curves_json.write_text(json.dumps({"split": split, "fps": data_fps, **errors.to_dict()}, indent=2) + "\n")
    done(curves_json)

    dream_len = dream_factor * horizon
    long = dream_clips(dm, dream_len, n, split) if dream_factor > 1 else None
    if long is None:
        long = (context, target)
        if dream_factor > 1:
            log(f"note: the {split} split has no {n} clips of {t_ctx + dream_len} frames; the dreams show the "
                f"truth for the first {horizon} predicted frames only")
    dream = analysis.rollout(module, long[0], dream_len, hidden=False)
    inputs = analysis.inputs_read(roll, context)
    surprise, unit, what = analysis.surprise_maps(module, roll, target)
    notes = set()
    for i in range(n):
        title = f"{name}, {split} clip {i}"
        fig = figures.comparison_figure(context[i], target[i], roll.prediction()[i], title=title, fps=data_fps)
        done(figures.save(fig, out / f"comparison_{i}.png"))

        video = clip_video(context[i], target[i], roll.frames[i], scale=scale, fps=data_fps)
        path, codec = write_mp4(video.frames, out / f"side_by_side_{i}.mp4", play)
        if codec != "libx264":
            notes.add(f"note: this PyAV has no libx264 encoder; the MP4 files are MPEG-4 part 2 ({codec})")
        done(path)
        done(write_gif(video.frames, out / f"side_by_side_{i}.gif", play, grey=context.shape[2] == 1))

        fig = figures.surprise_figure(target[i], roll.prediction()[i], surprise[i], unit, title=f"{title}\n{what}",
                                      fps=data_fps)
        done(figures.save(fig, out / f"surprise_{i}.png"))

        if roll.hidden is not None:
            rgb, explained = analysis.pca_rgb(roll.hidden[i])
            fig = figures.hidden_figure(inputs[i], rgb, roll.frames[i], t_ctx, title=title,
                                        explained=explained.tolist(), fps=data_fps)
            done(figures.save(fig, out / f"hidden_{i}.png"))
        else:
            bar.update(1)
        if warps and roll.hidden is not None:
            from framecast.viz import flow

            fig = flow.flow_figure(inputs[i], flow.motion_field(module, roll.hidden[i]), roll.frames[i], t_ctx,
                                   title=title, fps=data_fps)
            done(figures.save(fig, out / f"flow_{i}.png"))

        video = clip_video(long[0][i], long[1][i], dream.frames[i], trained_horizon=horizon, scale=scale,
                           fps=data_fps, labels=("1-step prediction", "dream"))
        done(write_mp4(video.frames, out / f"dream_{i}.mp4", play)[0])
    bar.close()
    for note in sorted(notes):
        log(note)
    return written


# --- the command ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast visualize`` with ``argv`` (without the command name); return the exit code."""
    argv = rewrite_aliases(list(sys.argv[1:] if argv is None else argv), ALIASES)
    argv = with_data_section(argv)
    cfg = parse(build_parser(), argv)
    check_options(cfg.clips, cfg.dream_factor, cfg.curve_clips, cfg.fps, cfg.scale)
    if not cfg.out:
        raise ConfigError("--out is required: the folder the pictures and videos go to")
    module = load(cfg.ckpt_path, pick_device(cfg.device))
    dm = build_datamodule(cfg, module, argv)
    seed = cfg.seed_everything
    if seed is not False:  # shuffled (training) loaders give the same clips on every run
        from lightning import seed_everything

        seed_everything(None if seed is True else int(seed), verbose=False)
    written = visualize(module, dm, cfg.out, clips=cfg.clips, dream_factor=cfg.dream_factor, split=cfg.split,
                        curve_clips=cfg.curve_clips, playback_fps=cfg.fps, scale=cfg.scale)
    print(f"wrote {len(written)} files to {cfg.out}:")
    for path in written:
        print(f"  {path}")
    return 0
