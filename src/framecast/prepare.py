"""``framecast prepare``: decode videos into the on-disk cache ahead of training.

    framecast prepare VIDEOS... [--fps F] [--size H W] [--crop center|none] [--channels 1|3]
                                [--cache-dir DIR] [--on-bad-video error|skip]

Use the same fps/size/crop/channels as the data module config, so that training finds every video
in the cache. Prints one line per video: ``cached`` (decoded and written), ``skipped`` (already
cached) or ``bad`` (with the reason). Exit code 0 on success; 1 when a bad input was found in
``error`` mode, or when no video could be used at all.
"""

from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from framecast.data.cache import VideoCache, default_cache_dir
from framecast.data.decode import DecodeSettings, VideoDecodeError, find_videos


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framecast prepare",
        description="Decode videos (resampled to --fps, resized to --size) into the framecast cache.",
    )
    parser.add_argument("videos", nargs="+", help="video files, folders (searched recursively) or globs")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: native frames)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="frame size (default: 64 64)")
    parser.add_argument("--crop", choices=("center", "none"), default="center")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1)
    parser.add_argument("--cache-dir", default=None,
                        help=f"cache folder (default: $FRAMECAST_CACHE or {default_cache_dir()})")
    parser.add_argument("--on-bad-video", choices=("error", "skip"), default="error",
                        help="error: exit 1 if any input is bad; skip: report it and go on")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast prepare`` with ``argv`` (without the command name); return the exit code."""
    args = build_parser().parse_args(argv)
    settings = DecodeSettings(fps=args.fps, size=tuple(args.size), crop=args.crop, channels=args.channels)
    cache = VideoCache(args.cache_dir)
    paths, problems = find_videos(args.videos)
    for item, reason in problems:
        tqdm.write(f"bad      {item}: {reason}")
    good = 0
    for path in tqdm(paths, desc="prepare", unit="video", file=sys.stderr):
        try:
            entry, decoded = cache.get_or_decode(path, settings)
        except VideoDecodeError as e:
            problems.append((str(path), e.reason))
            tqdm.write(f"bad      {path}: {e.reason}")
            continue
        good += 1
        verb = "cached  " if decoded else "skipped "
        note = "" if decoded else " (already cached)"
        tqdm.write(f"{verb} {path} -> {entry.frames_path} ({entry.num_frames} frames){note}")
    print(f"{good} video(s) ready in {cache.root}, {len(problems)} bad input(s)")
    if problems and args.on_bad_video == "error":
        print("error: fix or remove the bad inputs above, or pass --on-bad-video skip", file=sys.stderr)
        return 1
    if good == 0:
        print("error: no usable video", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
