"""Bad configs fail at once, through the real command (``framecast.cli.main``), with a message naming the
field and the accepted values, before any video is decoded or any training starts."""

from __future__ import annotations

import pytest

from conftest import VIDEOS
from framecast.cli import main
from framecast.data import MovingMNISTDataModule

DIGITS = ["--data.class_path", "framecast.data.MovingMNISTDataModule", "--data.init_args.context_frames", "3",
          "--data.init_args.horizon_frames", "2", "--data.init_args.canvas", "32", "--data.init_args.train_size", "8",
          "--data.init_args.val_size", "4", "--data.init_args.test_size", "4", "--data.init_args.batch_size", "4",
          "--model.hidden", "[8]", "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"]

VIDEO_CONFIG = """
trainer: {{max_steps: 1, enable_progress_bar: false}}
model: {{model: convlstm, hidden: [8], kernel_size: 3, patch_size: 4}}
data:
  class_path: framecast.data.VideoClipDataModule
  init_args:
    videos: {video}
    fps: 8
    context_seconds: 0.5
    horizon_seconds: 0.5
    size: [16, 16]
    cache_dir: {cache}
    batch_size: 2
"""


@pytest.fixture(autouse=True)
def _capture(capsys):
    global _CAPSYS
    _CAPSYS = capsys
    yield


def fails(args, tmp_path) -> str:
    """The one message of a bad config: exit code 2, no traceback, nothing trained or written."""
    _CAPSYS.readouterr()
    assert main(["fit", *args, "--trainer.default_root_dir", str(tmp_path / "run")]) == 2
    out = _CAPSYS.readouterr()
    assert "Traceback" not in out.out + out.err
    assert out.err.startswith("framecast fit: error: ")
    assert not (tmp_path / "run").exists()  # nothing was trained or written
    return out.err


@pytest.mark.parametrize("args,needles", [
    (["--model.model", "convlsm"], ["convlsm", "model.model", "convlstm", "predrnn"]),
    (["--model.loss", "mse+fancy"], ["fancy", "model.loss", "mse", "gdl"]),
    (["--model.patch_size", "3"], ["model.patch_size 3", "32x32", "data.init_args.canvas", "1, 2, 4"]),
    (["--model.patch_size", "0"], ["model.patch_size", ">= 1"]),
    (["--data.init_args.horizon_frames", "0"], ["data.init_args.horizon_frames", "positive integer"]),
    (["--data.init_args.context_frames", "1"], ["data.init_args.context_frames", "at least 2", "no gradient"]),
    (["--data.init_args.channels", "2"], ["data.init_args.channels", "1 or 3"]),
    (["--model.lr", "0"], ["model.lr", "> 0"]),
    (["--model.loss_stages", "{10: l2}"], ["model.loss_stages, step 10", "unknown loss", "l2", "mse"]),
    (["--model.loss_stages", "{0: l1}"], ["model.loss_stages", "step 0", "integer > 0"]),
])
def test_bad_model_or_digits_settings_are_named(tmp_path, args, needles):
    message = fails(DIGITS + args, tmp_path)
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize("args,needles", [
    (["--data.init_args.fps", "0"], ["data.init_args.fps", "positive"]),
    (["--data.init_args.fps", "-8"], ["data.init_args.fps", "positive"]),
    (["--data.init_args.context_seconds", "-1"], ["data.init_args.context_seconds", "positive", "-1"]),
    (["--data.init_args.horizon_seconds", "0"], ["data.init_args.horizon_seconds", "positive"]),
    (["--data.init_args.stride_seconds", "0"], ["data.init_args.stride_seconds", "positive"]),
    (["--data.init_args.size", "[18, 18]"], ["18x18", "data.init_args.size", "model.patch_size 4", "1, 2"]),
    (["--data.init_args.context_seconds", "0.1"], ["data.init_args.context_frames", "1 context frame", "at least 2"]),
    (["--data.init_args.horizon_seconds", "null", "--data.init_args.horizon_frames", "0"],
     ["data.init_args.horizon_frames", ">= 1"]),
])
def test_bad_video_settings_are_named_before_decoding(tmp_path, args, needles):
    if not VIDEOS.is_dir():
        pytest.skip(f"{VIDEOS} is absent")
    cache = tmp_path / "cache"
    config = tmp_path / "video.yaml"
    config.write_text(VIDEO_CONFIG.format(video=VIDEOS / "mmaction2_test_xvid.avi", cache=cache))
    message = fails(["--config", str(config), *args], tmp_path)
    for needle in needles:
        assert needle in message, (needle, message)
    assert not cache.exists()  # no video was decoded


def test_a_digit_as_large_as_the_canvas_stays_put():
    # canvas == digit size used to loop forever reflecting in [0, 0]
    dm = MovingMNISTDataModule(context_frames=2, horizon_frames=2, canvas=28, train_size=4, val_size=2, test_size=2)
    dm.setup()
    assert dm.datasets["train"][0]["context"].shape == (2, 1, 28, 28)
