"""``framecast predict`` writes the test split's predictions as uint8 arrays ``(N, T, C, H, W)`` (0..255), for
moving digits and for real video, one file per run or one per batch, and names every file it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framecast.cli import main
from framecast.data import MovingMNISTDataModule
from framecast.module import FramePredictionModule

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
VIDEO_CONFIG = ROOT / "configs" / "video_convlstm.yaml"
VIDEO = ROOT.parent / "shared" / "data" / "videos" / "intel_one-by-one-person-detection.mp4"
DIGITS = ["--data.init_args.canvas", "32", "--data.init_args.context_frames", "3", "--data.init_args.horizon_frames",
          "2", "--data.init_args.train_size", "8", "--data.init_args.val_size", "4", "--data.init_args.test_size", "6",
          "--data.init_args.batch_size", "4"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 2-step, one 8-channel layer ConvLSTM on 32x32 moving digits."""
    root = tmp_path_factory.mktemp("fit")
    assert main(["fit", "--config", str(QUICKSTART), *DIGITS, *QUIET, "--model.hidden", "[8]", "--model.kernel_size",
                 "3", "--model.warmup_steps", "0", "--trainer.max_steps", "2", "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(root), "--checkpoint.dirpath", str(root / "ckpt")]) == 0
    return root / "ckpt" / "last.ckpt"


def expected(ckpt: Path, test_size: int = 6) -> np.ndarray:
    """What the checkpoint predicts for the test clips, as uint8."""
    module = FramePredictionModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    dm = MovingMNISTDataModule(canvas=32, context_frames=3, horizon_frames=2, train_size=8, val_size=4,
                               test_size=test_size, batch_size=4)
    dm.setup("predict")
    with torch.inference_mode():
        preds = torch.cat([module(b["context"], 2) for b in dm.predict_dataloader()])
    return (preds.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def test_predict_writes_the_test_predictions(ckpt, tmp_path, capsys):
    capsys.readouterr()
    assert main(["predict", "--config", str(QUICKSTART), *DIGITS, *QUIET, "--ckpt_path", str(ckpt),
                 "--trainer.default_root_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # the default folder: <log dir>/predictions (TensorBoard's version folder)
    path = tmp_path / "lightning_logs" / "version_0" / "predictions" / "predictions.npy"
    assert f"wrote {path}" in out
    arr = np.load(path)
    assert arr.dtype == np.uint8 and arr.shape == (6, 2, 1, 32, 32)
    assert arr.max() <= 255 and arr.max() > 0
    assert np.abs(arr.astype(int) - expected(ckpt).astype(int)).max() <= 1  # the model's own predictions


def test_predict_one_file_per_batch_in_a_given_folder(ckpt, tmp_path, capsys):
    capsys.readouterr()
    folder = tmp_path / "preds"
    args = ["predict", "--config", str(QUICKSTART), *DIGITS, *QUIET, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(tmp_path / "run"), "--prediction.output_dir", str(folder),
            "--prediction.write_interval", "batch"]
    assert main(args) == 0
    out = capsys.readouterr().out
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == ["predictions_batch0.npy", "predictions_batch1.npy"]
    for p in files:
        assert f"wrote {p}" in out
    arrays = [np.load(p) for p in files]
    assert [a.shape for a in arrays] == [(4, 2, 1, 32, 32), (2, 2, 1, 32, 32)]
    assert all(a.dtype == np.uint8 for a in arrays)
    assert np.abs(np.concatenate(arrays).astype(int) - expected(ckpt).astype(int)).max() <= 1


def test_a_checkpoint_that_does_not_fit_the_data_is_bad_input(ckpt, tmp_path, capsys):
    capsys.readouterr()
    # RGB clips for a grayscale model: its weights do not fit the model built for 3 channels
    assert main(["predict", "--config", str(QUICKSTART), *DIGITS, *QUIET, "--ckpt_path", str(ckpt),
                 "--trainer.default_root_dir", str(tmp_path), "--data.init_args.channels", "3"]) == 2
    err = capsys.readouterr().err
    assert f"framecast predict: error: --ckpt_path {ckpt} does not fit the model" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.npy"))


@pytest.mark.skipif(not VIDEO.is_file(), reason=f"{VIDEO} is absent")
def test_predict_on_a_real_video(ckpt, tmp_path, capsys):
    capsys.readouterr()
    # the digits model (1 channel, patch 4) on 16x16 grayscale clips of a real video: 3 context + 2 predicted
    # frames at 8 fps, the test split's first 3 clips
    video = ["--config", str(VIDEO_CONFIG), "--data.init_args.videos", str(VIDEO), "--data.init_args.cache_dir",
             str(tmp_path / "cache"), "--data.init_args.size", "[16, 16]", "--data.init_args.context_seconds", "null",
             "--data.init_args.horizon_seconds", "null", "--data.init_args.context_frames", "3",
             "--data.init_args.horizon_frames", "2", "--data.init_args.max_clips_per_split", "3",
             "--data.init_args.batch_size", "2", "--data.init_args.split", "[0.5, 0.25, 0.25]"]
    assert main(["predict", *video, *QUIET, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (path,) = tmp_path.rglob("predictions.npy")
    assert f"wrote {path}" in out
    arr = np.load(path)
    assert arr.dtype == np.uint8 and arr.shape == (3, 2, 1, 16, 16) and 0 < arr.max() <= 255
