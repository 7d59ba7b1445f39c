"""What a ``framecast fit`` reports: TensorBoard logs by default (scalars and the comparison picture), the
summary on the clips validation used, and no start-up chatter in the output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from framecast.cli import main

ROOT = Path(__file__).resolve().parents[1]
FRAMECAST = Path(sys.executable).with_name("framecast")
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
# 32x32 moving digits, 3 -> 2 frames, 2 training batches of 4 per epoch, one 8-channel layer
TINY = ["--config", str(QUICKSTART), "--data.init_args.canvas", "32", "--data.init_args.context_frames", "3",
        "--data.init_args.horizon_frames", "2", "--data.init_args.train_size", "8", "--data.init_args.val_size", "4",
        "--data.init_args.test_size", "4", "--data.init_args.batch_size", "4", "--model.hidden", "[8]",
        "--model.kernel_size", "3", "--model.warmup_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


def events(root: Path) -> EventAccumulator:
    (path,) = {p.parent for p in root.rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_fit_logs_scalars_and_pictures_to_tensorboard_by_default(tmp_path, capsys):
    root = tmp_path / "runs"
    code = main(["fit", *TINY, "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1",
                 "--summary.every_n_epochs", "1", "--trainer.default_root_dir", str(root)])
    assert code == 0, capsys.readouterr().err
    acc = events(root)
    assert acc.path.startswith(str(root / "lightning_logs" / "version_0"))
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "val/mse_frame", "val/mse_frame_t1", "val/mse_frame_t2", "val/copy_last/mse_frame",
                "val/loss", "val/psnr"):
        assert tag in scalars, (tag, sorted(scalars))
    assert len(acc.Scalars("train/loss")) == 4  # every step
    # the picture after each of the 2 epochs (steps 2 and 4); the one at the end of fit is that of step 4
    pictures = acc.Images("val/comparison")
    assert [p.step for p in pictures] == [2, 4]
    assert pictures[0].encoded_image_string.startswith(b"\x89PNG") and pictures[0].width > 100


def test_the_end_of_fit_picture_goes_to_tensorboard_too(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["fit", *TINY, "--trainer.max_steps", "1", "--trainer.default_root_dir", str(root)]) == 0
    assert [p.step for p in events(root).Images("val/comparison")] == [1]


def test_a_config_logger_is_kept(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["fit", *TINY, "--trainer.max_steps", "1", "--trainer.default_root_dir", str(root),
                 "--trainer.log_every_n_steps", "1", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                 "--trainer.logger.save_dir", str(tmp_path / "csv")]) == 0
    assert list((tmp_path / "csv").rglob("metrics.csv")) and not list(tmp_path.rglob("events.out.tfevents.*"))
    assert main(["fit", *TINY, "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path / "none"),
                 "--trainer.logger", "false"]) == 0
    assert not list((tmp_path / "none").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("options,clips", [
    ([], 12),                                          # every validation clip
    (["--trainer.limit_val_batches", "1"], 4),         # an integer: batches
    (["--trainer.limit_val_batches", "2"], 8),
    (["--trainer.limit_val_batches", "0.34"], 4),      # a fraction of the 3 batches
    (["--summary.clips", "5"], 5),                     # at most N clips, the last batch cut
    (["--trainer.limit_val_batches", "1", "--summary.clips", "6"], 6),
])
def test_the_summary_scores_the_clips_validation_used(tmp_path, capsys, options, clips):
    assert main(["fit", *TINY, "--data.init_args.val_size", "12", "--trainer.max_steps", "1",
                 "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(tmp_path), *options]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"validation mse_frame on {clips} clips: model [\d.]+, copy-last baseline [\d.]+", out), out


NOISE = ("GPU available", "TPU available", "HPU available", "Seed set to", "💡", "litlogger", "tensorboardX",
         "LightningCLI's args parameter", "was configured so", "Loading `train_dataloader`", "Missing logger folder",
         "LeafSpec")


def test_no_start_up_noise(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run([str(FRAMECAST), "fit", *TINY, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                          "--trainer.default_root_dir", str(tmp_path / "x")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for noise in NOISE:
        assert noise not in text, (noise, text)
    assert "validation mse_frame on 4 clips" in out.stdout and "comparison picture:" in out.stdout
