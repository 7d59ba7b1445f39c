"""Video I/O throughput of framecast's video data path.

    .venv/bin/python benchmarks/video_io.py [--videos DIR] [--runs 5] [--fps 10] [--size 64 64]
                                            [--channels 1] [--clip 20] [--json out.json]

Measured per file (medians over --runs runs, all in the same process and run):

* reference: raw PyAV decode, ``for frame in container.decode(video=0): frame.to_ndarray(format="rgb24")``
  (PyAV defaults), in source frames/s; also with ``thread_type = "AUTO"``.
* first pass: ``framecast.data.decode.decode_video`` (decode + timestamp resampling + resize), in
  source frames/s; ``cold cache``: the same plus writing the cache entry (``VideoCache.get_or_decode``).
  Requirement: first pass >= 0.8x the reference.
* clip loading from the cache through ``VideoClipDataset[i]`` (random clips) and through a
  DataLoader (batch 16, no workers), in clips/s, against decoding each clip from the file (seek to the
  clip start, decode, resize; PyAV). Requirement: cached >= 50x per-clip decoding.

Prints a Markdown table and the JSON of all figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from framecast.data.cache import VideoCache
from framecast.data.decode import DecodeSettings, decode_video, find_videos
from framecast.data.video import VideoClipDataset

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def timed(fn, runs: int) -> tuple[float, object]:
    """(median seconds, last result) of ``fn()`` over ``runs`` runs."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def timed_interleaved(fns: dict, runs: int) -> dict[str, tuple[float, object]]:
    """Like ``timed`` for several functions, run in turn (a, b, c, a, b, c, ...) so that load changes
    on a shared machine hit them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, object] = {}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {k: (statistics.median(v), results[k]) for k, v in times.items()}


def reference_decode(path: Path, threaded: bool = False) -> int:
    with av.open(str(path)) as container:
        if threaded:
            container.streams.video[0].thread_type = "AUTO"
        n = 0
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def decode_clip_from_file(path: Path, start_s: float, n_frames: int, fps: float, size, channels: int) -> np.ndarray:
    """Baseline without a cache: seek to ``start_s``, decode, take the frames nearest to
    ``start_s + k / fps`` (k < n_frames) and resize them with PyAV."""
    fmt = "gray" if channels == 1 else "rgb24"
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
        targets = [start_s + k / fps for k in range(n_frames)]
        prev = None
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base)
            while targets and targets[0] <= t:
                pick = prev if prev is not None and targets[0] - prev[0] <= t - targets[0] else (t, frame)
                out.append(pick[1].to_ndarray(width=size[1], height=size[0], format=fmt))
                targets.pop(0)
            if not targets:
                break
            prev = (t, frame)
    return np.stack(out)


def bench_file(path: Path, args, cache_root: Path) -> dict:
    settings = DecodeSettings(fps=args.fps, size=tuple(args.size), crop="center", channels=args.channels)
    n_source = reference_decode(path)  # also warms the file cache

    def cold():
        cache = VideoCache(tempfile.mkdtemp(dir=cache_root))
        return cache.get_or_decode(path, settings)[0]

    runs = timed_interleaved(
        {
            "ref": lambda: reference_decode(path),
            "ref_mt": lambda: reference_decode(path, threaded=True),
            "first": lambda: decode_video(path, settings),
            "cold": cold,
        },
        args.runs,
    )
    (t_ref, _), (t_ref_mt, _), (t_first, (frames, info)), (t_cold, entry) = runs.values()
    row = {
        "file": path.name,
        "source_frames": n_source,
        "output_frames": int(frames.shape[0]),
        "reference_fps": n_source / t_ref,
        "reference_threaded_fps": n_source / t_ref_mt,
        "first_pass_fps": n_source / t_first,
        "cold_cache_fps": n_source / t_cold,
    }
    row["first_pass_vs_reference"] = row["first_pass_fps"] / row["reference_fps"]
    row["first_pass_vs_threaded_reference"] = row["first_pass_fps"] / row["reference_threaded_fps"]

    clip = args.clip
    if frames.shape[0] >= clip:
        starts = list(range(frames.shape[0] - clip + 1))
        rng = random.Random(0)
        ds = VideoClipDataset([entry.frames_path], [(0, s) for s in starts], clip // 2, clip - clip // 2)
        order = [rng.randrange(len(ds)) for _ in range(args.clips)]
        ds[0]  # warm-up: opens the memmap, first torch ops
        t_ds, _ = timed(lambda: [ds[i] for i in order], args.runs)
        loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=0)
        t_dl, n_dl = timed(lambda: sum(len(b["context"]) for b in loader), args.runs)
        few = [starts[rng.randrange(len(starts))] for _ in range(args.file_clips)]
        fps = args.fps or info["source_fps"]
        t_file, _ = timed(
            lambda: [decode_clip_from_file(path, s / fps, clip, fps, args.size, args.channels) for s in few],
            max(1, args.runs // 2),
        )
        row.update(
            cached_dataset_clips_per_s=len(order) / t_ds,
            cached_dataloader_clips_per_s=n_dl / t_dl,
            decode_per_clip_clips_per_s=len(few) / t_file,
        )
        row["cached_vs_decode_per_clip"] = row["cached_dataset_clips_per_s"] / row["decode_per_clip_clips_per_s"]
    return row


def markdown(rows: list[dict]) -> str:
    cols = [
        ("file", "file", "{}"),
        ("source_frames", "src frames", "{}"),
        ("reference_fps", "ref rgb24 f/s", "{:.0f}"),
        ("reference_threaded_fps", "ref threaded f/s", "{:.0f}"),
        ("first_pass_fps", "first pass f/s", "{:.0f}"),
        ("first_pass_vs_reference", "vs ref", "{:.2f}x"),
        ("first_pass_vs_threaded_reference", "vs threaded ref", "{:.2f}x"),
        ("cold_cache_fps", "cold cache f/s", "{:.0f}"),
        ("cached_dataset_clips_per_s", "cached clips/s", "{:.0f}"),
        ("cached_dataloader_clips_per_s", "loader clips/s", "{:.0f}"),
        ("decode_per_clip_clips_per_s", "per-clip decode clips/s", "{:.1f}"),
        ("cached_vs_decode_per_clip", "cached vs per-clip", "{:.0f}x"),
    ]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[k]) if k in row else "-" for k, _, fmt in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", default=[str(DEFAULT_VIDEOS)])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fps", type=float, default=10.0, help="0 for native frames")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--clip", type=int, default=20, help="frames per clip (context + horizon)")
    parser.add_argument("--clips", type=int, default=2000, help="cached clips read per run")
    parser.add_argument("--file-clips", type=int, default=10, help="clips decoded from the file per run")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.fps = args.fps or None
    torch.set_num_threads(1)
    paths, problems = find_videos(args.videos)
    if problems:
        print(f"inputs not found: {problems}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_file(p, args, Path(tmp)) for p in paths]
    result = {
        "settings": {k: getattr(args, k) for k in ("runs", "fps", "size", "channels", "clip", "clips", "file_clips")},
        "machine": {"python": platform.python_version(), "av": av.__version__, "numpy": np.__version__,
                    "torch": torch.__version__, "cpus": __import__("os").cpu_count()},
        "files": rows,
    }
    print(markdown(rows))
    print()
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
