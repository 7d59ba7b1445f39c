"""The decode cache: decode once, re-decode on change, ignore partial entries; `framecast prepare`."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import write_video
from framecast.data import cache as cache_mod
from framecast.data.cache import VideoCache, default_cache_dir
from framecast.data.decode import DecodeSettings
from framecast.data.video import VideoClipDataModule
from framecast.prepare import main as prepare_main

SETTINGS = DecodeSettings(fps=10, size=(16, 16))


@pytest.fixture
def folder(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, n in enumerate([60, 75, 90]):
        write_video(videos / f"v{i}.mp4", n)
    return videos


def make_dm(videos, cache_dir, **kw):
    return VideoClipDataModule(str(videos), fps=10, context_frames=3, horizon_frames=2, size=(16, 16),
                               cache_dir=str(cache_dir), **kw)


def entry_files(cache_dir: Path, stem: str) -> tuple[Path, Path]:
    (npy,) = cache_dir.glob(f"{stem}-*.npy")
    return npy, npy.with_suffix(".json")


def test_second_run_decodes_nothing(folder, tmp_path):
    cache = tmp_path / "cache"
    first = make_dm(folder, cache)
    first.prepare_data()
    first.setup("fit")
    assert first.stats == {"decoded": 3, "cached": 0}
    assert len(list(cache.glob("*.npy"))) == 3 and len(list(cache.glob("*.json"))) == 3
    second = make_dm(folder, cache)
    second.prepare_data()
    second.setup("fit")
    assert second.stats == {"decoded": 0, "cached": 3}
    assert second.windows == first.windows
    a, b = first.dataset("train")[5], second.dataset("train")[5]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cached_frames_are_memory_mapped_and_described(folder, tmp_path):
    cache = VideoCache(tmp_path / "cache")
    entry, decoded = cache.get_or_decode(folder / "v1.mp4", SETTINGS)
    assert decoded
    frames = entry.load()
    assert isinstance(frames, np.memmap) and frames.dtype == np.uint8 and frames.shape == (25, 16, 16, 1)
    meta = json.loads(entry.meta_path.read_text())
    assert meta["frames"] == 25 and meta["source_frames"] == 75 and meta["source_fps"] == 30
    assert meta["settings"] == {"fps": 10.0, "size": [16, 16], "crop": "center", "channels": 1}
    assert meta["source"]["path"] == str((folder / "v1.mp4").resolve())
    assert cache.get_or_decode(folder / "v1.mp4", SETTINGS)[1] is False


def test_touching_a_file_redecodes_only_it(folder, tmp_path):
    cache = tmp_path / "cache"
    make_dm(folder, cache).setup("fit")
    st = os.stat(folder / "v1.mp4")
    os.utime(folder / "v1.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    dm = make_dm(folder, cache)
    dm.setup("fit")
    assert dm.stats == {"decoded": 1, "cached": 2}
    assert len(list(cache.glob("v1-*.npy"))) == 2  # the old entry is left alone


def test_other_settings_are_other_entries(folder, tmp_path):
    cache = VideoCache(tmp_path / "cache")
    cache.get_or_decode(folder / "v0.mp4", SETTINGS)
    for other in (DecodeSettings(fps=5, size=(16, 16)), DecodeSettings(fps=10, size=(16, 16), channels=3),
                  DecodeSettings(fps=10, size=(16, 16), crop="none"), DecodeSettings(fps=10, size=(8, 16))):
        entry, decoded = cache.get_or_decode(folder / "v0.mp4", other)
        assert decoded and entry.load().shape[1:] == (*other.size, other.channels)
    assert len(list(cache.root.glob("*.npy"))) == 5


@pytest.mark.parametrize("damage", ["truncated_npy", "npy_without_sidecar", "garbage_sidecar",
                                    "sidecar_without_npy", "sidecar_of_other_shape"])
def test_partial_entries_are_ignored_and_rebuilt(folder, tmp_path, damage):
    cache = VideoCache(tmp_path / "cache")
    good, _ = cache.get_or_decode(folder / "v2.mp4", SETTINGS)
    expected = np.array(good.load())
    npy, sidecar = good.frames_path, good.meta_path
    if damage == "truncated_npy":
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif damage == "npy_without_sidecar":
        sidecar.unlink()
    elif damage == "garbage_sidecar":
        sidecar.write_text('{"frames": 3')
    elif damage == "sidecar_without_npy":
        npy.unlink()
    elif damage == "sidecar_of_other_shape":
        meta = json.loads(sidecar.read_text())
        meta["shape"][0] += 1
        sidecar.write_text(json.dumps(meta))
    assert cache.lookup(folder / "v2.mp4", SETTINGS) is None
    entry, decoded = cache.get_or_decode(folder / "v2.mp4", SETTINGS)
    assert decoded and np.array_equal(entry.load(), expected)
    assert cache.lookup(folder / "v2.mp4", SETTINGS) is not None


def test_interrupted_write_leaves_nothing_valid(folder, tmp_path, monkeypatch):
    cache = VideoCache(tmp_path / "cache")

    def crash(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(cache_mod.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_decode(folder / "v0.mp4", SETTINGS)
    monkeypatch.undo()
    assert list(cache.root.iterdir()) == []  # temp file removed, nothing renamed into place
    # a temp file left by a killed process (no cleanup possible) is ignored too
    (cache.root / ".v0-whatever.npy.abc.tmp").write_bytes(b"\x93NUMPY partial")
    assert cache.lookup(folder / "v0.mp4", SETTINGS) is None
    assert cache.get_or_decode(folder / "v0.mp4", SETTINGS)[1] is True


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("FRAMECAST_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "framecast" / "video"


def test_dataset_pickles_without_frames(folder, tmp_path):
    dm = make_dm(folder, tmp_path / "cache")
    dm.setup("fit")
    ds = dm.dataset("train")
    ds[0]  # opens the memmaps
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert len(pickle.dumps(ds)) < 10_000
    assert np.array_equal(clone[3]["target"], ds[3]["target"])


def test_dataloader_with_workers(folder, tmp_path):
    dm = make_dm(folder, tmp_path / "cache", num_workers=2, batch_size=4)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(len(b["context"]) for b in batches) == len(dm.dataset("train"))


def test_prepare_then_module_decodes_nothing(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = [str(folder), "--fps", "10", "--size", "16", "16", "--cache-dir", str(cache)]
    assert prepare_main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("cached   ") == 3 and str(cache) in out
    for npy in cache.glob("*.npy"):
        assert str(npy) in out
    assert prepare_main(argv) == 0
    assert capsys.readouterr().out.count("(already cached)") == 3
    dm = make_dm(folder, cache)
    dm.setup("fit")
    assert dm.stats == {"decoded": 0, "cached": 3}


def test_prepare_options(folder, tmp_path):
    cache = tmp_path / "cache"
    code = prepare_main([str(folder / "v0.mp4"), "--size", "8", "12", "--crop", "none", "--channels", "3",
                         "--cache-dir", str(cache)])
    assert code == 0
    (npy,) = cache.glob("*.npy")
    assert np.load(npy).shape == (60, 8, 12, 3)  # native fps: every frame
