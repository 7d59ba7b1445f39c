"""Explicit video splits (``data.init_args.splits``) and the KTH protocol configs, on tiny videos with KTH's
file names written by the test."""

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from framecast.cli import main
from framecast.data import VideoClipDataModule
from framecast.errors import InputError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PERSONS = ("01", "02", "15", "16", "17", "25")


def write_avi(path: Path, n_frames: int = 32, size: int = 16) -> Path:
    """A small MPEG-4 Part 2 AVI at KTH's 25 fps."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def kth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kth")
    for person in PERSONS:
        for action in ("walking", "boxing"):
            write_avi(root / f"person{person}_{action}_d1_uncomp.avi")
    return root


def kth_data(config: str, kth_dir: Path, cache: Path, **overrides) -> VideoClipDataModule:
    args = yaml.safe_load((CONFIGS / config).read_text())["data"]["init_args"]
    args.update(videos=str(kth_dir), size=[16, 16], cache_dir=str(cache), **overrides)
    return VideoClipDataModule(**args)


def persons(entries) -> set[str]:
    return {Path(e["video"]).name[6:8] for e in entries}


def test_kth_split_by_person(kth_dir, tmp_path):
    dm = kth_data("kth_convlstm.yaml", kth_dir, tmp_path)
    dm.setup()
    d = dm.describe_splits()
    assert d["method"].startswith("explicit")
    assert persons(d["splits"]["train"]) == {"01", "02", "15"}
    assert persons(d["splits"]["val"]) == {"16"}
    assert persons(d["splits"]["test"]) == {"17", "25"}
    # 32 frames, clips of 10 + 20: 3 training clips per video (stride 1), 1 evaluation clip per video
    assert [e["clips"] for e in d["splits"]["train"]] == [3] * 6
    assert [e["clips"] for e in d["splits"]["test"]] == [1] * 4
    assert d["unassigned"] == []
    path = dm.write_splits(tmp_path / "run")
    assert json.loads(path.read_text()) == json.loads(json.dumps(d))
    line = dm.splits_line()
    assert "train 6 video(s) / 18 clips" in line and "val 2 video(s) / 2 clips" in line


def test_kth_40_frame_variant_needs_longer_videos(kth_dir, tmp_path):
    dm = kth_data("kth_predrnn_40.yaml", kth_dir, tmp_path, on_bad_video="skip")
    with pytest.warns(UserWarning, match="too short"), pytest.raises(Exception, match="no usable video"):
        dm.setup()


def test_unmatched_videos_are_listed_and_overlaps_refused(kth_dir, tmp_path):
    dm = VideoClipDataModule(videos=str(kth_dir), context_frames=4, horizon_frames=4, size=(16, 16),
                             cache_dir=str(tmp_path), splits={"train": ["person01_*"], "test": ["person17_*"]})
    dm.setup("test")
    d = dm.describe_splits()
    assert len(d["unassigned"]) == 8 and d["splits"]["val"] == []
    assert dm.val_dataloader() == []  # a split without patterns is switched off
    both = VideoClipDataModule(videos=str(kth_dir), context_frames=4, horizon_frames=4, size=(16, 16),
                               cache_dir=str(tmp_path), splits={"train": ["person0*"], "val": ["*walking*"]})
    with pytest.raises(ValueError, match="matches the patterns of train and val"):
        both.setup()
    none = VideoClipDataModule(videos=str(kth_dir), context_frames=4, horizon_frames=4, size=(16, 16),
                               cache_dir=str(tmp_path), splits={"train": ["person0*"], "test": ["nobody_*"]})
    with pytest.raises(InputError, match="splits.test"):
        none.setup("test")
    with pytest.raises(ValueError, match="unknown split"):
        VideoClipDataModule(videos=str(kth_dir), context_frames=4, horizon_frames=4, splits={"training": ["*"]})


def test_kth_config_trains_a_few_steps(kth_dir, tmp_path):
    code = main(["fit", "--config", str(CONFIGS / "kth_convlstm.yaml"), "--data.init_args.videos", str(kth_dir),
                 "--data.init_args.size", "[16, 16]", "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--model.hidden", "[4]", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"])
    assert code == 0
    assert list((tmp_path / "run").rglob("last.ckpt"))


def test_fit_and_prepare_write_the_splits(kth_dir, tmp_path, capsys):
    code = main(["fit", "--config", str(CONFIGS / "kth_convlstm.yaml"), "--data.init_args.videos", str(kth_dir),
                 "--data.init_args.size", "[16, 16]", "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--model.hidden", "[4]", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
                 "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--trainer.logger", "false"])
    assert code == 0
    out = capsys.readouterr().out
    assert "splits (explicit patterns" in out and "train 6 video(s) / 18 clips" in out
    written = list((tmp_path / "run").rglob("splits.json"))
    assert len(written) == 1 and persons(json.loads(written[0].read_text())["splits"]["val"]) == {"16"}
    code = main(["prepare", "--config", str(CONFIGS / "kth_convlstm.yaml"), "--data.init_args.videos", str(kth_dir),
                 "--data.init_args.size", "[16, 16]", "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--splits-out", str(tmp_path / "prep")])
    assert code == 0
    out = capsys.readouterr().out
    assert "splits (explicit patterns" in out
    assert persons(json.loads((tmp_path / "prep" / "splits.json").read_text())["splits"]["test"]) == {"17", "25"}
