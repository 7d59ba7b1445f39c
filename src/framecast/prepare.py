"""``framecast prepare``: decode videos into the on-disk cache ahead of training.

    framecast prepare --config FILE [--data.init_args.KEY VALUE ...]
    framecast prepare VIDEOS... [--fps F] [--size H W] [--crop center|none] [--channels 1|3]
                                [--cache-dir DIR] [--on-bad-video error|skip]
    ... [--workers N] [--to litdata OUT]

The videos and their decoding settings (``videos``, ``fps``, ``size``, ``crop``, ``channels``, ``cache_dir``,
``on_bad_video``) are those of the config's ``data:`` section (a ``VideoClipDataModule``), so training with
the same config finds every video in the cache. Positional ``VIDEOS`` and the flags above are the older
spellings of ``--data.init_args.videos``, ``--data.init_args.fps`` and so on (they override the config).
Prints one line per video: ``cached`` (decoded and written), ``skipped`` (already cached) or ``bad`` (with the
reason). Exit code 0 on success; 2 when a bad input was found in ``error`` mode, or no video could be used.

``--workers N`` decodes in N processes (default: the CPUs; :mod:`framecast.data.parallel`), writing the cache
files one process writes. ``--to litdata OUT`` then writes the config's clips (every split) as LitData chunks
to the folder or object-store URL OUT (:mod:`framecast.data.streaming`), which ``data.init_args.streaming:
OUT`` trains from.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence

from framecast.errors import ConfigError, InputError, run_command

PROG = "framecast prepare"
VIDEO_DATA = "framecast.data.VideoClipDataModule"
# old flag -> the data module option it sets (``--size H W`` takes two values)
OLD_FLAGS = {"--fps": "fps", "--crop": "crop", "--channels": "channels", "--cache-dir": "cache_dir",
             "--on-bad-video": "on_bad_video"}
NO_VALUE = ("-h", "--help")
PRINT_CONFIG_FLAGS = {"comments", "skip_default", "skip_null"}

DESCRIPTION = """Decode videos into the framecast frame cache, with the decoding settings (fps, size, crop,
channels) and cache_dir of the config's data section, so that training finds them there.
Older spellings, still accepted: positional VIDEOS (= --data.init_args.videos), --fps F, --size H W, --crop,
--channels, --cache-dir DIR, --on-bad-video error|skip (= --data.init_args.KEY).
--workers N decodes in N processes; --to litdata OUT writes the clips as LitData chunks to OUT (a folder or
an s3:// / gs:// URL), for data.init_args.streaming: OUT."""


def rewrite_argv(argv: Sequence[str]) -> list[str]:
    """The grammar's spelling of ``argv``: positional videos -> ``--data.init_args.videos`` (a list, last so
    that it overrides the config), old flags -> ``--data.init_args.KEY``, and a ``VideoClipDataModule``
    where neither ``--config`` nor ``--data`` names the data."""
    argv = list(argv)
    out: list[str] = []
    videos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if a == "--":
            videos += argv[i + 1 :]
            break
        if not a.startswith("-"):
            videos.append(a)
            i += 1
        elif name == "--size" and not eq:
            if i + 2 < len(argv) and not argv[i + 1].startswith("-") and not argv[i + 2].startswith("-"):
                out.append(f"--data.init_args.size=[{argv[i + 1]}, {argv[i + 2]}]")
                i += 3
            else:
                raise ConfigError(f"--size takes two numbers, H W (e.g. --size 64 64), got {argv[i + 1:i + 3]}")
        elif name == "--size":
            out.append(f"--data.init_args.size={value}")
            i += 1
        elif name in OLD_FLAGS:
            new = f"--data.init_args.{OLD_FLAGS[name]}"
            if eq:
                out.append(f"{new}={value}")
                i += 1
            else:
                out += [new, *argv[i + 1 : i + 2]]
                i += 2
        elif name == "--to" and not eq:
            out += argv[i : i + 3]  # --to FORMAT OUT
            i += 3
        elif eq or name in NO_VALUE:
            out.append(a)
            i += 1
        elif name == "--print_config":
            takes = i + 1 < len(argv) and set(argv[i + 1].split(",")) <= PRINT_CONFIG_FLAGS
            out += argv[i : i + 1 + takes]
            i += 1 + takes
        else:  # every other option of the grammar takes one value
            out += argv[i : i + 2]
            i += 2
    names = {a.partition("=")[0] for a in out}
    if not names & {"-c", "--config", "--data", "--data.class_path"}:
        out.insert(0, f"--data.class_path={VIDEO_DATA}")
    if videos:
        out.append(f"--data.init_args.videos={json.dumps(videos)}")
    return out


def build_parser():
    from framecast.cli.grammar import tool_parser

    parser = tool_parser(PROG, DESCRIPTION)
    parser.add_argument("--splits-out", type=str | None, default=None,
                        help="folder for splits.json, what every split holds (default: the config's "
                             "trainer.default_root_dir, else the current folder)")
    parser.add_argument("--workers", type=int | None, default=None,
                        help="processes that decode videos (and write chunks) at the same time (default: the CPUs)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="machines preparing together, sharing data.init_args.cache_dir (a shared file system): "
                             "each decodes the videos in its own order and skips those another one cached; node 0 "
                             "writes --to once every video is cached")
    parser.add_argument("--node-rank", type=int, default=0, help="this machine's number, 0 .. nodes-1")
    parser.add_argument("--to", type=str, nargs=2, default=None, metavar=("FORMAT", "OUT"),
                        help="also write the clips of every split to OUT: 'litdata OUT', OUT a folder or an "
                             "object-store URL (s3://..., gs://...), for data.init_args.streaming: OUT")
    return parser


def video_settings(cfg) -> dict:
    """``videos``, the decoding settings, ``cache_dir`` and ``on_bad_video`` of a parsed config's data section."""
    from framecast.cli.grammar import section_dict
    from framecast.data.video import VideoClipDataModule

    data = section_dict(cfg, "data")
    class_path = data.get("class_path") or ""
    module_name, _, cls_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if cls is None or not issubclass(cls, VideoClipDataModule):
        raise ConfigError(f"data.class_path is {class_path or 'not set'}: framecast prepare decodes the videos of a "
                          f"{VIDEO_DATA} (give a video config, or VIDEOS / --data.init_args.videos)")
    args = dict(data.get("init_args") or {})
    if not args.get("videos"):
        raise ConfigError("no videos to prepare: give VIDEOS, --data.init_args.videos, or a config whose data "
                          "section sets videos")
    return args


def prepare(argv: Sequence[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from framecast.cli.grammar import parse
    from framecast.data.cache import VideoCache
    from framecast.data.decode import BadVideoError, DecodeSettings, find_videos
    from framecast.data.parallel import decode_all, default_workers
    from framecast.data.video import _check_settings

    argv = list(sys.argv[1:] if argv is None else argv)
    rewritten = rewrite_argv(argv)
    asks_help = any(a.partition("=")[0] in ("-h", "--help", "--print_config") for a in argv)
    if rewritten[0] == f"--data.class_path={VIDEO_DATA}" and not asks_help and not any(
            a.startswith("--data.init_args.videos") for a in rewritten):
        raise ConfigError(f"no videos to prepare: give VIDEOS, --data.init_args.videos or --config FILE "
                          f"(see {PROG} --help)")
    cfg = parse(build_parser(), rewritten)
    args = video_settings(cfg)
    size = tuple(args.get("size") or (64, 64))
    fps, crop, channels = args.get("fps"), args.get("crop", "center"), args.get("channels", 1)
    on_bad = args.get("on_bad_video", "error")
    if on_bad not in ("error", "skip"):
        raise ConfigError(f"data.init_args.on_bad_video (--on-bad-video) must be 'error' or 'skip', got {on_bad!r}")
    try:
        _check_settings(fps, size, crop, channels, args.get("batch_size", 1))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    workers = cfg.get("workers") or default_workers()
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    nodes, rank = cfg.get("nodes") or 1, cfg.get("node_rank") or 0
    if not 0 <= rank < nodes:
        raise ConfigError(f"--node-rank must be in 0 .. --nodes - 1 = {nodes - 1}, got {rank}")
    target = cfg.get("to")
    if target is not None and target[0] != "litdata":
        raise ConfigError(f"--to takes FORMAT OUT with FORMAT litdata (e.g. --to litdata clips/), got {target[0]!r}")
    settings = DecodeSettings(fps=fps, size=size, crop=crop, channels=channels)
    cache = VideoCache(args.get("cache_dir"))
    paths, problems = find_videos(args["videos"])
    for item, reason in problems:
        tqdm.write(f"bad      {item}: {reason}")
    good = 0
    for result in decode_all(cache, paths, settings, workers, start=rank / nodes):
        if result.entry is None:
            problems.append((str(result.path), result.reason))
            tqdm.write(f"bad      {result.path}: {result.reason}")
            continue
        good += 1
        entry, verb = result.entry, "cached  " if result.decoded else "skipped "
        note = "" if result.decoded else " (already cached)"
        tqdm.write(f"{verb} {result.path} -> {entry.frames_path} ({entry.num_frames} frames){note}")
    print(f"{good} video(s) ready in {cache.root}, {len(problems)} bad input(s)")
    if problems and on_bad == "error":
        raise BadVideoError(problems)
    if good == 0:
        raise InputError(f"no usable video in {args['videos']!r}")
    dm = write_splits(cfg, args)
    if target is not None and rank == 0:
        write_litdata(dm, target[1], workers)
    elif target is not None:
        print(f"node {rank} of {nodes}: every video is cached; node 0 writes the clips to {target[1]}")
    return 0


def write_litdata(dm, out: str, workers: int) -> None:
    """The clips of ``dm`` as LitData chunks in OUT, and what was written."""
    from framecast.data import streaming

    if dm is None:
        raise ConfigError("--to litdata needs the clip lengths: give --config FILE (or --data.init_args."
                          "context_frames/horizon_frames, or *_seconds)")
    print(streaming.describe(streaming.write_clips(dm, out, workers), out))


def write_splits(cfg, args: dict):
    """The splits training with this config will use (read from the cache just filled): ``splits.json`` and a
    one-line summary; returns the data module (set up), or None where the clip lengths are not known (plain
    ``VIDEOS`` have none)."""
    from framecast.cli.grammar import section_dict
    from framecast.data.video import VideoClipDataModule

    # (the videos, also where the config streams its clips from data.init_args.streaming: OUT)
    options = {k: v for k, v in args.items() if k in VideoClipDataModule.__init__.__code__.co_varnames
               and k != "streaming"}
    if not all(options.get(f"{n}_seconds") is not None or options.get(f"{n}_frames") is not None
               for n in ("context", "horizon")):
        print("no clip lengths given (context/horizon): splits are not computed; give --config to see them")
        return None
    dm = VideoClipDataModule(**options)
    dm.setup("prepare")  # (no stage: the splits are cut, none is required to hold a clip)
    folder = cfg.get("splits_out") or section_dict(cfg, "trainer").get("default_root_dir") or "."
    path = dm.write_splits(folder)
    print(f"{dm.splits_line()}; every split in {path}")
    return dm


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast prepare`` with ``argv`` (without the command name); return the exit code."""
    return run_command(PROG, lambda: prepare(argv))


if __name__ == "__main__":
    sys.exit(main())
