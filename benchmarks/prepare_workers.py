"""Decoding a folder of videos into the cache with 1 and with N worker processes (``framecast prepare --workers``).

    .venv/bin/python benchmarks/prepare_workers.py [--videos DIR] [--copies 3] [--workers 2] [--rounds 5]
                                                   [--fps 8] [--size 64 64] [--channels 1] [--json out.json]

The folder is the videos of DIR (default: the shared test videos), each copied ``--copies`` times into a
temporary folder (copies, not links: the cache keys a video by its resolved path, so each copy is decoded).
Each round times :func:`framecast.data.parallel.decode_all` (what ``framecast prepare`` runs) into a fresh,
empty cache folder with 1 worker and with ``--workers``, in alternating order (1, N, N, 1, ...), so that a
change of load on the machine falls on both; it checks that both wrote the same bytes. Prints the median
wall time of each, the speed-up (median 1-worker time / median N-worker time) and the median of the rounds'
own speed-ups (each round's pair ran back to back, under about the same load), the load average before and
after, the CPU time used (this process and its workers: more than the wall time where the decoder runs
threads), and the CPU; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from framecast.data.cache import VideoCache
from framecast.data.decode import DecodeSettings, find_videos
from framecast.data.parallel import decode_all

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    return sum(t.ru_utime + t.ru_stime for t in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed(paths, settings, workers: int, root: Path) -> tuple[float, float, dict[str, bytes]]:
    cache = VideoCache(root)
    start, cpu = time.perf_counter(), cpu_seconds()
    results = list(decode_all(cache, paths, settings, workers))
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    bad = [r for r in results if r.entry is None]
    if bad:
        raise SystemExit(f"bad videos: {[(str(r.path), r.reason) for r in bad]}")
    return elapsed, cpu, {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=SHARED)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fps", type=float, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=[64, 64])
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = DecodeSettings(fps=args.fps, size=tuple(args.size), channels=args.channels)
    sources, problems = find_videos(args.videos)
    if problems or not sources:
        raise SystemExit(f"no videos in {args.videos}: {problems}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "videos")
        folder.mkdir()
        for k in range(args.copies):
            for src in sources:
                shutil.copy(src, folder / f"{k}_{src.name}")
        paths, _ = find_videos(folder)
        times: dict[int, list[float]] = {1: [], args.workers: []}
        cpu: dict[int, list[float]] = {1: [], args.workers: []}
        load_before = os.getloadavg()
        for r in range(args.rounds):
            order = (1, args.workers) if r % 2 == 0 else (args.workers, 1)
            files = {}
            for w in order:
                root = Path(tmp, f"cache-{r}-{w}")
                elapsed, used, files[w] = timed(paths, settings, w, root)
                times[w].append(elapsed)
                cpu[w].append(used)
                shutil.rmtree(root)
            if files[1] != files[args.workers]:
                raise SystemExit("the cache files differ between 1 and N workers")
            print(f"round {r}: 1 worker {times[1][-1]:.2f} s ({cpu[1][-1]:.2f} CPU s), {args.workers} workers "
                  f"{times[args.workers][-1]:.2f} s ({cpu[args.workers][-1]:.2f} CPU s)", flush=True)
        load_after = os.getloadavg()
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    paired = statistics.median(a / b for a, b in zip(times[1], times[args.workers]))
    result = {"videos": len(paths), "source_folder": str(args.videos), "copies": args.copies,
              "settings": {"fps": args.fps, "size": args.size, "channels": args.channels},
              "rounds": args.rounds, "workers": args.workers, "median_s": {"1": one, str(args.workers): many},
              "times_s": {str(k): v for k, v in times.items()},
              "cpu_s": {str(k): v for k, v in cpu.items()}, "speedup": one / many, "median_round_speedup": paired,
              "cpus": len(os.sched_getaffinity(0)), "cpu": cpu_name(),
              "loadavg_before": load_before, "loadavg_after": load_after}
    print(f"{len(paths)} videos, {args.rounds} rounds: median 1 worker {one:.2f} s, {args.workers} workers "
          f"{many:.2f} s, speed-up {one / many:.2f}x (median of the rounds' {paired:.2f}x); {result['cpus']} CPUs ({result['cpu']}), load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; median CPU time 1 worker "
          f"{statistics.median(cpu[1]):.2f} s, {args.workers} workers {statistics.median(cpu[args.workers]):.2f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
