"""Bad video inputs: each is reported by file name with its reason, in error and skip mode, and
none of them touches the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import write_video
from framecast.data.decode import BadVideoError, DecodeSettings, VideoDecodeError, decode_video
from framecast.data.video import VideoClipDataModule
from framecast.prepare import main as prepare_main

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
needs_videos = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared test videos not found at {VIDEOS}")


def truncated_copy(src: Path, dst: Path, fraction: float = 0.3) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture
def inputs(tmp_path):
    """Two good videos in good/ and one of each kind of bad input, with the expected reasons."""
    good = tmp_path / "good"
    good.mkdir()
    write_video(good / "a.mp4", 60)
    write_video(good / "b.mp4", 64)
    bad = tmp_path / "bad"
    bad.mkdir()
    (tmp_path / "empty_folder").mkdir()
    (bad / "x.mp4").write_bytes(b"")
    (bad / "y.avi").write_text("this is a text file, not a video\n" * 20)
    write_video(bad / "short.mp4", 3)
    cases = {
        str(tmp_path / "missing.mp4"): "no such file",
        str(tmp_path / "empty_folder"): "folder contains no videos",
        str(bad / "x.mp4"): "empty file",
        str(bad / "y.avi"): "not a readable video",
        str(bad / "short.mp4"): "too short: 3 frames",
    }
    if VIDEOS.is_dir():  # truncated copies of real files (in tmp only)
        cases[str(truncated_copy(VIDEOS / "intel_car-detection.mp4", bad / "trunc.mp4"))] = "truncated or corrupt"
        cases[str(truncated_copy(VIDEOS / "mmaction2_test_xvid.avi", bad / "trunc.avi"))] = "truncated or corrupt"
    return good, cases


def make_dm(videos, cache_dir, **kw):
    return VideoClipDataModule(videos, context_frames=4, horizon_frames=2, size=(16, 16),
                               cache_dir=str(cache_dir), **kw)


def test_error_mode_raises_one_error_naming_every_bad_input(inputs, tmp_path):
    good, cases = inputs
    dm = make_dm([str(good), *cases], tmp_path / "cache")
    with pytest.raises(BadVideoError) as info:
        dm.prepare_data()
    err = info.value
    assert isinstance(err, ValueError)
    message = str(err)
    for path, reason in cases.items():
        assert f"{path}: {reason}" in message
    assert "on_bad_video: skip" in message and "Fix or remove" in message
    assert {p for p, _ in err.problems} == set(cases)
    assert "a.mp4" not in message and "b.mp4" not in message


def test_setup_alone_also_raises_before_training(inputs, tmp_path):
    good, cases = inputs
    dm = make_dm([str(good), *cases], tmp_path / "cache")
    with pytest.raises(BadVideoError):
        dm.setup("fit")


def test_skip_mode_warns_and_uses_the_good_videos(inputs, tmp_path):
    good, cases = inputs
    dm = make_dm([str(good), *cases], tmp_path / "cache", on_bad_video="skip", split=(0.6, 0.2, 0.2))
    with pytest.warns(UserWarning, match="skipping") as record:
        dm.prepare_data()
    dm.setup("fit")  # reuses what prepare_data found: no second warning, no second decode
    message = "\n".join(str(w.message) for w in record)
    for path, reason in cases.items():
        assert f"{path}: {reason}" in message
    assert [p.name for p in dm.video_paths] == ["a.mp4", "b.mp4"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["context"].shape[1:] == (4, 1, 16, 16)


def test_all_bad_is_an_error_even_in_skip_mode(inputs, tmp_path):
    _, cases = inputs
    dm = make_dm(list(cases), tmp_path / "cache", on_bad_video="skip")
    with pytest.warns(UserWarning), pytest.raises(BadVideoError, match="no usable video"):
        dm.setup("fit")


@pytest.mark.parametrize("kind", ["missing", "folder", "glob"])
def test_nothing_found(tmp_path, kind):
    (tmp_path / "f").mkdir()
    videos = {"missing": str(tmp_path / "nope"), "folder": str(tmp_path / "f"), "glob": str(tmp_path / "*.mkv")}[kind]
    with pytest.raises(BadVideoError, match="no such file|contains no videos|matches no video"):
        make_dm(videos, tmp_path / "cache", on_bad_video="error").setup("fit")


@needs_videos
def test_truncated_mp4_is_reported_not_decoded_partially(tmp_path):
    path = truncated_copy(VIDEOS / "intel_car-detection.mp4", tmp_path / "t.mp4")
    with pytest.raises(VideoDecodeError, match="truncated or corrupt: .*116 of .*377 frames"):
        decode_video(path, DecodeSettings(fps=5, size=(16, 16)))


@needs_videos
def test_truncated_gif_is_reported(tmp_path):
    path = truncated_copy(VIDEOS / "intel_worker-zone-detection_preview.gif", tmp_path / "t.gif", 0.5)
    with pytest.raises(VideoDecodeError, match="truncated"):
        decode_video(path, DecodeSettings(size=(16, 16)))


def test_bad_input_never_caches_or_touches_cached_entries(inputs, tmp_path):
    good, cases = inputs
    cache = tmp_path / "cache"
    make_dm(str(good), cache, split=(0.6, 0.2, 0.2)).setup("fit")
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    assert len(before) == 4  # npy + json for a.mp4 and b.mp4

    # a.mp4 gets broken in place (same path), and bad files join the input
    shutil.copy(good / "a.mp4", tmp_path / "a_backup.mp4")
    truncated_copy(tmp_path / "a_backup.mp4", good / "a.mp4", 0.5)
    with pytest.raises(BadVideoError, match="a.mp4"):
        make_dm([str(good), *cases], cache).setup("fit")
    dm = make_dm([str(good), *cases], cache, on_bad_video="skip", split=(1, 0, 0))
    with pytest.warns(UserWarning, match="a.mp4"):
        dm.setup("fit")
    assert dm.stats["decoded"] == 0 and [p.name for p in dm.video_paths] == ["b.mp4"]
    after = {p.name: p.read_bytes() for p in cache.iterdir()}
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed or deleted
    # only the complete (but too short for a clip) video was added; no bad file, no temp file
    assert sorted(set(after) - set(before)) == [n for n in sorted(after) if n.startswith("short-")]
    assert len(after) == len(before) + 2


def test_prepare_command_reports_bad_files(inputs, tmp_path, capsys):
    good, cases = inputs
    files = [c for c in cases if not c.endswith("short.mp4")]  # prepare does not know clip lengths
    code = prepare_main([str(good), *files, "--size", "16", "16", "--cache-dir", str(tmp_path / "c")])
    out = capsys.readouterr()
    assert code == 2  # bad input: exit code 2, one message naming every bad file, no traceback
    for path in files:
        assert f"bad      {path}" in out.out
        assert f"{path}: {cases[path]}" in out.err
    assert "--on-bad-video skip" in out.err and "Traceback" not in out.out + out.err
    assert "\nframecast prepare: error: " in out.err
    code = prepare_main([str(good), *files, "--cache-dir", str(tmp_path / "c"), "--on-bad-video", "skip"])
    assert code == 0
    assert prepare_main([*files, "--cache-dir", str(tmp_path / "c"), "--on-bad-video", "skip"]) == 2
    assert "no usable video" in capsys.readouterr().err


@pytest.mark.parametrize("ext", ["mkv", "webm"])
def test_truncated_file_without_frame_count_is_reported(tmp_path, ext):
    """mkv/webm headers carry no frame count and the decoder may stop quietly: the duration in the
    header gives the truncation away."""
    whole = write_video(tmp_path / f"whole.{ext}", 120, size=32)
    decode_video(whole, DecodeSettings(size=(16, 16)))  # the whole file is fine
    path = truncated_copy(whole, tmp_path / f"t.{ext}", 0.5)
    with pytest.raises(VideoDecodeError, match="truncated or corrupt: its frames cover"):
        decode_video(path, DecodeSettings(size=(16, 16)))
