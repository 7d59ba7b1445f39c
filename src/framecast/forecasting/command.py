"""``framecast forecast``: the future of any video, past its end, as a video, with sampled futures.

    framecast forecast --ckpt_path CKPT --video FILE [--at SECONDS] [--seconds S | --frames N] --out DIR
                       [--samples K] [--temperature T] [--fps F] [--scale S] [--device D]
                       [--seed_everything N] [--config FILE] [--data.init_args.KEY VALUE] [--print_config]

The options every framecast command understands (:mod:`framecast.cli.grammar`) plus this command's own. The
video is decoded at the checkpoint's fps, size, crop and channels (its saved data settings; ``--config``'s data
section and ``--data.init_args.KEY`` override them; a checkpoint without a frame rate, e.g. moving digits,
decodes at ``--fps`` or every native frame). The context window ends at ``--at`` seconds (default: the end
of the video; :mod:`framecast.forecasting.source`), and the model rolls out ``--seconds`` (or ``--frames``; default:
its trained horizon) past it, any length. It writes to ``--out``:

* ``forecast.mp4`` (H.264, at the model's fps): the context then the forecast, borders and labels saying which
  is which and the seconds ahead; truth and |error| beside the forecast where the video goes on;
* ``forecast.npy``: the forecast only, uint8 ``(T, C, H, W)``; ``forecast.png``: a strip of context and
  forecast frames labelled with seconds;
* ``metrics.json`` where the video goes on after ``--at``: per-step metrics of the forecast and of copy-last on
  that stretch (also printed);
* with ``--samples K`` (``head: logistic_mixture``): ``samples.mp4`` (the K futures beside the mean),
  ``samples.npy`` (uint8 ``(K, T, C, H, W)``) and ``spread.png`` (per-pixel std across the samples).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from framecast.cli.data import data_keys, flag_values, with_data_section
from framecast.cli.grammar import parse, rewrite_aliases, section_dict, tool_parser
from framecast.errors import ConfigError
from framecast.loading import VIDEO_CLIP_KEYS

PROG = "framecast forecast"
ALIASES = {"--ckpt": "--ckpt_path", "--seed": "--seed_everything"}
DEFAULT_PLAYBACK_FPS = 4.0  # a video without a frame rate
DATA_KEYS = (*VIDEO_CLIP_KEYS, "canvas")
DESCRIPTION = """Forecast the future of a video past --at (default: its end), as a video. The video is decoded
like the checkpoint's training clips (its fps, size, crop, channels; --data.init_args.KEY overrides one), its
context window ends at --at, and the model rolls out --seconds (or --frames) past it. Writes to --out:
forecast.mp4 (context then forecast, the truth and |error| beside it where the video goes on), forecast.npy
(uint8 (T, C, H, W), the forecast only), forecast.png (a strip labelled with seconds), metrics.json (per-step
metrics of the forecast and copy-last where the truth is known); with --samples K (head: logistic_mixture):
samples.mp4, samples.npy and spread.png (per-pixel std across the samples)."""


def build_parser():
    """The parser of every framecast command (:func:`framecast.cli.grammar.tool_parser`) plus this one's."""
    parser = tool_parser(PROG, DESCRIPTION)
    parser.add_argument("--video", type=str | None, default=None, help="the video file to forecast (required)")
    parser.add_argument("--out", type=str | None, default=None, help="output folder (required)")
    parser.add_argument("--at", type=float | None, default=None,
                        help="seconds into the video where the context ends and the forecast starts (default: the end)")
    parser.add_argument("--seconds", type=float | None, default=None, help="seconds to forecast (or --frames)")
    parser.add_argument("--frames", type=int | None, default=None,
                        help="frames to forecast (default, with neither: the checkpoint's trained horizon)")
    parser.add_argument("--samples", type=int, default=0,
                        help="sampled futures K (a model with head: logistic_mixture), seeded by --seed_everything")
    parser.add_argument("--temperature", type=float, default=1.0, help="scales the logistic scales of the samples")
    parser.add_argument("--fps", type=float | None, default=None,
                        help="decode at this frame rate (a checkpoint without one, e.g. moving digits: default native)")
    parser.add_argument("--scale", type=int | None, default=None,
                        help="nearest-neighbour upscale of the video panels (default: to about 192 pixels)")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, ... (auto: cuda where available)")
    return parser


def check_options(cfg) -> None:
    """A value that cannot work -> :class:`ConfigError` naming the option."""
    if not cfg.ckpt_path:
        raise ConfigError("--ckpt_path is required: a checkpoint written by framecast fit")
    if not cfg.video:
        raise ConfigError("--video is required: the video file to forecast")
    if not cfg.out:
        raise ConfigError("--out is required: the folder the forecast goes to")
    if cfg.seconds is not None and cfg.frames is not None:
        raise ConfigError("give --seconds or --frames, not both")
    if cfg.seconds is not None and not cfg.seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {cfg.seconds}")
    if cfg.frames is not None and cfg.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {cfg.frames}")
    if cfg.samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {cfg.samples}")
    if not cfg.temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {cfg.temperature}")
    if cfg.scale is not None and cfg.scale < 1:
        raise ConfigError(f"--scale must be >= 1, got {cfg.scale}")
    if cfg.fps is not None and not cfg.fps > 0:
        raise ConfigError(f"--fps must be > 0, got {cfg.fps}")


def data_overrides(cfg, argv: list[str]) -> dict:
    """The data options asked for: ``--data.init_args.KEY`` on the command line and the keys the ``--config``
    files' data sections set (values as parsed, so later ones win)."""
    import yaml

    asked = set(data_keys(argv))
    for path in flag_values(argv, "--config") + flag_values(argv, "-c"):
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # the parser has read it already; a config it could not read failed there
        data = doc.get("data") if isinstance(doc, dict) else None
        if isinstance(data, dict):
            asked |= set((data.get("init_args") or {}) if isinstance(data.get("init_args"), dict) else ())
    args = section_dict(cfg, "data").get("init_args") or {}
    args = args.as_dict() if hasattr(args, "as_dict") else dict(args)
    return {k: args[k] for k in asked if k in DATA_KEYS and k in args}


def horizon_of(cfg, fps: float | None, trained: int) -> int:
    if cfg.frames is not None:
        return int(cfg.frames)
    if cfg.seconds is not None:
        if not fps:
            raise ConfigError("--seconds needs a frame rate, and the video has none: give --frames or --fps")
        n = round(cfg.seconds * fps)
        if n < 1:
            raise ConfigError(f"--seconds {cfg.seconds:g} is less than one frame at {fps:g} fps")
        return n
    return trained


def metrics_table(result: dict, fps: float | None, most: int = 24) -> str:
    """The per-step metrics as text: one row per step (evenly spaced rows past ``most``), model / copy-last."""
    from framecast.viz.figures import pick_columns

    names = list(result["model"])
    n = result["steps"]
    head = f"{'step':>5} {'ahead':>8}  " + "  ".join(f"{m + ' model/copy_last':>30}" for m in names)
    lines = [head]

    def cell(m: str, i: int | None) -> str:
        model = result["model"][m][i] if i is not None else result["mean"]["model"][m]
        copy = result["copy_last"].get(m)
        copy = (copy[i] if i is not None else result["mean"]["copy_last"][m]) if copy is not None else None
        return f"{model:>14.5g} / {copy:<13.5g}" if copy is not None else f"{model:>14.5g} / {'-':<13}"

    for i in pick_columns(n, most):
        ahead = f"{(i + 1) / fps:+.2f}s" if fps else f"t+{i + 1}"
        lines.append(f"{i + 1:>5} {ahead:>8}  " + "  ".join(cell(m, i) for m in names))
    lines.append(f"{'mean':>5} {'':>8}  " + "  ".join(cell(m, None) for m in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast forecast`` with ``argv`` (without the command name); return the exit code."""
    argv = rewrite_aliases(list(sys.argv[1:] if argv is None else argv), ALIASES)
    argv = with_data_section(argv)
    cfg = parse(build_parser(), argv)
    check_options(cfg)
    from framecast.viz.command import load, pick_device

    module = load(cfg.ckpt_path, pick_device(cfg.device))
    return run(cfg, module, argv)


def run(cfg, module, argv: list[str]) -> int:
    """Everything after parsing: decode, forecast, write and name every file."""
    import numpy as np
    from tqdm.auto import tqdm

    from framecast.forecasting import api, render, source
    from framecast.viz import figures
    from framecast.viz.codecs import write_mp4

    if cfg.samples and not api.has_distribution(module):
        raise ConfigError(f"--samples {cfg.samples} draws futures from the model's per-pixel distribution, and "
                          f"checkpoint {cfg.ckpt_path} has none (its head is deterministic): sampling needs a model "
                          f"trained with head: logistic_mixture (--model.head logistic_mixture); or leave --samples out")
    overrides = data_overrides(cfg, argv)
    if "--model.channels" in {a.partition("=")[0] for a in argv} and "channels" not in overrides:
        overrides["channels"] = int(cfg.model.channels)
    where = "--config / --data.init_args" if any(a.partition("=")[0] in ("-c", "--config") for a in argv) \
        else "--data.init_args"
    settings = source.frame_settings(module, fps=cfg.fps, overrides=overrides, checkpoint=cfg.ckpt_path,
                                     overrides_from=where)
    clip = source.video_clip(cfg.video, module, at=cfg.at, settings=settings)
    horizon = horizon_of(cfg, clip.fps, settings.horizon_frames)
    truth = clip.truth(horizon).float().div(255)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = 3 + (1 if len(truth) else 0) + (3 if cfg.samples else 0)
    seed = cfg.seed_everything
    if seed is not False:
        from lightning import seed_everything

        seed = seed_everything(None if seed is True else int(seed), verbose=False)
    notes = list(settings.notes)
    if cfg.at is not None and clip.fps and abs(clip.end / clip.fps - cfg.at) > 1e-6:
        notes.append(f"note: --at {cfg.at:g} s is between frames; the forecast starts at frame {clip.end} "
                     f"({clip.end / clip.fps:.2f} s at {clip.fps:g} fps)")
    for note in notes:
        print(note)
    bar = tqdm(total=1 + cfg.samples + files, desc="forecast (rollouts, files)", unit="task", file=sys.stderr)
    written: list[Path] = []

    def done(path: Path) -> None:
        written.append(Path(path))
        bar.update(1)

    result = api.forecast(module, clip.context, horizon, samples=cfg.samples, temperature=cfg.temperature,
                          seed=None if seed is False else int(seed), fps=clip.fps, start=clip.start,
                          progress=bar.update)
    play = clip.fps or DEFAULT_PLAYBACK_FPS
    codecs = set()
    video = render.forecast_video(result, truth, scale=cfg.scale)
    path, codec = write_mp4(video.frames, out / "forecast.mp4", play)
    codecs.add(codec)
    done(path)
    np.save(out / "forecast.npy", result.uint8())
    done(out / "forecast.npy")
    what = f"{Path(cfg.video).name}: {len(result.context)} context frames, forecast from {_when(clip)}"
    done(figures.save(render.strip_figure(result, truth if len(truth) else None, title=what), out / "forecast.png"))
    if cfg.samples:
        path, codec = write_mp4(render.samples_video(result, scale=cfg.scale).frames, out / "samples.mp4", play)
        codecs.add(codec)
        done(path)
        np.save(out / "samples.npy", result.uint8(result.samples))
        done(out / "samples.npy")
        done(figures.save(render.spread_figure(result), out / "spread.png"))
    if len(truth):
        scores = api.forecast_metrics(result, truth, module)
        record = {"video": str(cfg.video), "checkpoint": str(cfg.ckpt_path), "fps": clip.fps,
                  "at": clip.start, "context_frames": len(result.context), "horizon_frames": horizon,
                  "steps_scored": scores["steps"], "seconds_ahead": (result.seconds_ahead() or [])[: scores["steps"]],
                  "metrics": {"model": scores["model"], "copy_last": scores["copy_last"]}, "mean": scores["mean"],
                  "unavailable": scores["unavailable"]}
        (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        done(out / "metrics.json")
    bar.close()
    if "libx264" not in codecs:
        print(f"note: this PyAV has no libx264 encoder; the MP4 files are MPEG-4 part 2 ({', '.join(codecs)})")
    print(f"forecast of {horizon} frames ({_span(horizon, clip.fps)}) from {_when(clip)} of {cfg.video}, "
          f"{len(result.context)} context frames at {_rate(clip.fps)}" +
          (f", {cfg.samples} sampled futures (temperature {cfg.temperature:g}, seed {seed})" if cfg.samples else ""))
    if len(truth):
        short = f" (the video ends {len(truth)} frames after --at)" if len(truth) < horizon else ""
        print(f"per-step metrics on the {len(truth)} frames where the video goes on{short}, model / copy_last:")
        print(metrics_table(scores, clip.fps))
    print(f"wrote {len(written)} files to {out}:")
    for path in written:
        print(f"  {path}")
    return 0


def _span(frames: int, fps: float | None) -> str:
    return f"{frames / fps:.2f} s" if fps else f"{frames} frames"


def _rate(fps: float | None) -> str:
    return f"{fps:g} fps" if fps else "the video's frames (no frame rate)"


def _when(clip) -> str:
    if clip.fps:
        where = "the end" if clip.end == len(clip.frames) else "--at"
        return f"{clip.end / clip.fps:.2f} s ({where}, frame {clip.end})"
    return f"frame {clip.end}"


if __name__ == "__main__":  # pragma: no cover
    from framecast.errors import run_command

    sys.exit(run_command(PROG, lambda: main()))
