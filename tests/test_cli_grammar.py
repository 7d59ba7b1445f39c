"""One grammar and one exit-code rule for every command, through the real entry point (``framecast.cli.main``
in-process, and the console script where the whole process's output matters): ``--config`` with
``--data.init_args.*`` overrides and ``--print_config`` everywhere, the old spellings where they are kept,
and bad inputs as one message with exit code 2 (no traceback unless ``FRAMECAST_DEBUG=1``), with nothing
computed before the error lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from framecast.benchmark_losses import benchmark_command
from framecast.cli import main

ROOT = Path(__file__).resolve().parents[1]
FRAMECAST = Path(sys.executable).with_name("framecast")
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
VIDEO_CONFIG = ROOT / "configs" / "video_convlstm.yaml"
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
GIF = VIDEOS / "intel_worker-zone-detection_preview.gif"  # 38 frames at 8 fps
needs_videos = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared test videos not found at {VIDEOS}")

DIGITS = ["--data.init_args.canvas", "32", "--data.init_args.context_frames", "3", "--data.init_args.horizon_frames",
          "2", "--data.init_args.train_size", "8", "--data.init_args.val_size", "4", "--data.init_args.test_size", "4",
          "--data.init_args.batch_size", "4", "--model.hidden", "[8]", "--model.kernel_size", "3",
          "--model.warmup_steps", "0", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run(*args, env_extra=None, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run([str(FRAMECAST), *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def printed_config(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return yaml.safe_load(out.out)


def bad_input(capsys, argv, command="fit") -> str:
    """Exit code 2, one message on stderr starting with ``framecast COMMAND: error:``, no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err, out.err
    assert f"framecast {command}: error: " in out.err
    return out.err


# --- --config, --data.init_args.* and --print_config everywhere -------------------------------------------


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_lightning_commands_print_their_config_with_overrides(capsys, command):
    cfg = printed_config(capsys, [command, "--config", str(QUICKSTART), "--data.init_args.val_size", "7",
                                  "--model.hidden", "[8]", "--print_config"])
    assert cfg["data"]["init_args"]["val_size"] == 7 and cfg["model"]["hidden"] == [8]
    assert cfg["data"]["class_path"] == "framecast.data.MovingMNISTDataModule"
    assert cfg["checkpoint"]["save_last"] is True
    assert cfg["summary"] == {"every_n_epochs": 0, "clips": None}
    assert cfg["prediction"] == {"output_dir": None, "write_interval": "epoch"}


def test_fit_without_config_prints_only_yaml(capsys):
    cfg = printed_config(capsys, ["fit", "--data.init_args.train_size", "5", "--print_config"])
    assert cfg["data"]["init_args"]["train_size"] == 5  # (the quickstart, and no notice before the YAML)


def test_limit_batches_read_an_integer_as_batches_and_a_decimal_as_a_fraction(capsys):
    for value, parsed in (("1", 1), ("1.0", 1.0), ("0.5", 0.5), ("3", 3)):
        cfg = printed_config(capsys, ["fit", "--trainer.limit_val_batches", value, "--print_config"])
        assert cfg["trainer"]["limit_val_batches"] == parsed and type(cfg["trainer"]["limit_val_batches"]) is type(parsed)


def test_prepare_takes_the_config_and_overrides(capsys, tmp_path):
    cfg = printed_config(capsys, ["prepare", "--config", str(VIDEO_CONFIG), "--data.init_args.fps", "5",
                                  "--data.init_args.cache_dir", str(tmp_path), "--print_config"])
    args = cfg["data"]["init_args"]
    assert args["fps"] == 5 and args["cache_dir"] == str(tmp_path) and args["videos"] == "../shared/data/videos"


def test_prepare_old_spellings_are_the_data_options(capsys, tmp_path):
    cfg = printed_config(capsys, ["prepare", "a.mp4", "--fps", "6", "--size", "32", "48", "b.mp4", "--crop", "none",
                                  "--channels", "3", "--cache-dir", str(tmp_path), "--on-bad-video", "skip",
                                  "--print_config"])
    assert cfg["data"]["class_path"] == "framecast.data.VideoClipDataModule"
    args = cfg["data"]["init_args"]
    assert args["videos"] == ["a.mp4", "b.mp4"] and args["fps"] == 6 and args["size"] == [32, 48]
    assert (args["crop"], args["channels"], args["cache_dir"], args["on_bad_video"]) == ("none", 3, str(tmp_path), "skip")
    # positional videos override the config's
    cfg = printed_config(capsys, ["prepare", "--config", str(VIDEO_CONFIG), "c.mp4", "--print_config"])
    assert cfg["data"]["init_args"]["videos"] == ["c.mp4"] and cfg["data"]["init_args"]["fps"] == 8


def test_benchmark_losses_takes_the_grammar_and_old_spellings(capsys):
    cfg = printed_config(capsys, ["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,l1",
                                  "--max-steps", "7", "--seed", "3", "--batch-size", "2", "--out", "x",
                                  "--data.init_args.val_size", "5", "--print_config"])
    assert cfg["trainer"]["max_steps"] == 7 and cfg["seed_everything"] == 3 and cfg["losses"] == "mse,l1"
    assert cfg["data"]["init_args"]["batch_size"] == 2 and cfg["data"]["init_args"]["val_size"] == 5
    cfg = printed_config(capsys, ["benchmark-losses", "--config", str(QUICKSTART), "--trainer.max_steps", "4",
                                  "--seed_everything", "5", "--out", "x", "--print_config"])
    assert cfg["trainer"]["max_steps"] == 4 and cfg["seed_everything"] == 5


@pytest.mark.parametrize("command", ["fit", "prepare", "benchmark-losses"])
def test_help(capsys, command):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--data" in out and "--print_config" in out


# --- benchmark-losses passes the options on -------------------------------------------------------------------


def test_benchmark_losses_trains_with_the_options_and_calls_the_benchmark(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(benchmark_command(), "main", lambda argv: calls.append(list(argv)) or 0)
    out = tmp_path / "losses"
    code = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,l1", "--max-steps", "1",
                 "--seed", "3", "--out", str(out), "--baselines", "copy_last", "--no-progress",
                 "--trainer.logger", "false", "--trainer.num_sanity_val_steps", "0", *DIGITS])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    ckpts = [out / loss / "checkpoints" / "last.ckpt" for loss in ("mse", "l1")]
    for loss, ckpt in zip(("mse", "l1"), ckpts):
        saved = torch.load(ckpt, weights_only=True)
        assert saved["global_step"] == 1 and saved["hyper_parameters"]["loss"] == loss
        assert saved["hyper_parameters"]["hidden"] == [8] and saved["datamodule_hyper_parameters"]["canvas"] == 32
        assert f"benchmarked {ckpt}" in printed
    (argv,) = calls
    assert argv[:3] == ["--ckpt_path", f"mse={ckpts[0]}", f"l1={ckpts[1]}"]  # each named by its loss
    pairs = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    assert pairs["--config"] == str(QUICKSTART) and pairs["--out"] == str(out) and pairs["--seed_everything"] == "3"
    assert pairs["--data.init_args.canvas"] == "32" and pairs["--baselines"] == "copy_last"
    assert "--no-progress" in argv and not any(a.startswith(("--model.", "--trainer.")) for a in argv)


def test_benchmark_losses_names_no_checkpoint_benchmarked_when_the_benchmark_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark_command(), "main", lambda argv: 2)
    code = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse", "--max-steps", "1",
                 "--out", str(tmp_path / "losses"), "--no-progress", "--trainer.logger", "false",
                 "--trainer.num_sanity_val_steps", "0", *DIGITS])
    assert code == 2
    printed = capsys.readouterr().out
    assert (tmp_path / "losses" / "mse" / "checkpoints" / "last.ckpt").is_file() and "benchmarked" not in printed


def test_benchmark_losses_bad_input(capsys, tmp_path):
    err = bad_input(capsys, ["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,psnr", "--max-steps",
                             "1", "--out", str(tmp_path)], "benchmark-losses")
    assert "psnr" in err
    err = bad_input(capsys, ["benchmark-losses", "--config", str(QUICKSTART), "--out", str(tmp_path),
                             "--trainer.max_steps", "0"], "benchmark-losses")
    assert "trainer.max_steps" in err
    assert not list(tmp_path.iterdir())


# --- bad input: one message, exit code 2 --------------------------------------------------------------------


@needs_videos
def test_a_folder_with_one_too_short_gif(tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(GIF, folder / "short.gif")
    cache = tmp_path / "cache"
    argv = ["fit", "--config", str(VIDEO_CONFIG), "--data.init_args.videos", str(folder),
            "--data.init_args.cache_dir", str(cache), "--data.init_args.size", "[16, 16]",
            "--trainer.default_root_dir", str(tmp_path / "run")]
    # long enough for a clip of 1 + 2 s, too short to split by time: the split and the videos are named
    err = bad_input(capsys, argv)
    assert "the train split has no clip of 24 frames: 1 usable video(s)" in err
    # too short for a single clip: the file is named with its length
    err = bad_input(capsys, argv + ["--data.init_args.horizon_seconds", "10"])
    assert f"{folder / 'short.gif'}: too short: 38 frames at 8 fps" in err
    # what was computed before the error is kept: the decoded frames are in the cache, and read again
    assert len(list(cache.glob("short-*.npy"))) == 1


@needs_videos
def test_the_console_script_reports_a_bad_video_in_one_message(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(GIF, folder / "short.gif")
    args = ["fit", "--config", str(VIDEO_CONFIG), "--data.init_args.videos", str(folder), "--data.init_args.cache_dir",
            str(tmp_path / "cache"), "--data.init_args.horizon_seconds", "10", "--trainer.default_root_dir",
            str(tmp_path / "run")]
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[0] == "framecast fit: error: 1 bad video input(s):"
    assert "short.gif: too short" in out.stderr
    out = run(*args, cwd=tmp_path, env_extra={"FRAMECAST_DEBUG": "1"})
    assert out.returncode == 2 and "Traceback" in out.stderr and "BadVideoError" in out.stderr


def test_config_value_rejected_by_a_constructor(capsys, tmp_path):
    err = bad_input(capsys, ["fit", "--config", str(QUICKSTART), "--model.loss", "mse+fancy",
                             "--trainer.default_root_dir", str(tmp_path)])
    assert "fancy" in err and "model.loss" in err
    err = bad_input(capsys, ["fit", "--config", str(QUICKSTART), "--summary.clips", "0",
                             "--trainer.default_root_dir", str(tmp_path)])
    assert "summary.clips" in err
    err = bad_input(capsys, ["fit", "--config", str(QUICKSTART), "--model.patch_size", "3",
                             "--trainer.default_root_dir", str(tmp_path)])  # check_model_and_data
    assert "model.patch_size 3" in err and "data.init_args.canvas" in err
    assert not list(tmp_path.iterdir())


def test_usage_errors_are_one_short_message(capsys, tmp_path):
    err = bad_input(capsys, ["fit", "--model.kernel_sise", "3"])
    assert "kernel_sise" in err and len(err.strip().splitlines()) <= 3 and "usage:" not in err
    err = bad_input(capsys, ["validate", "--config", str(QUICKSTART), "--ckpt_path", str(tmp_path / "nope.ckpt")],
                    "validate")
    assert f"--ckpt_path {tmp_path / 'nope.ckpt'}: no such checkpoint file" in err
    err = bad_input(capsys, ["prepare"], "prepare")
    assert "no videos to prepare" in err
    err = bad_input(capsys, ["prepare", "--config", str(QUICKSTART)], "prepare")
    assert "VideoClipDataModule" in err
    err = bad_input(capsys, ["prepare", "x.mp4", "--fps", "0", "--cache-dir", str(tmp_path / "c")], "prepare")
    assert "data.init_args.fps" in err


def test_a_failed_run_exits_1_and_keeps_its_checkpoints(tmp_path, capsys):
    # a learning rate this large makes the weights overflow: training stops at a non-finite loss
    code = main(["fit", "--config", str(QUICKSTART), *DIGITS, "--model.lr", "1e30", "--trainer.max_steps", "6",
                 "--checkpoint.every_n_train_steps", "1", "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.logger", "false", "--trainer.num_sanity_val_steps", "0"])
    out = capsys.readouterr()
    assert code == 1
    assert "training stopped at step" in out.err and "Traceback" not in out.out + out.err
    saved = list(tmp_path.rglob("*.ckpt"))
    assert saved and all(torch.load(p, weights_only=True)["global_step"] >= 1 for p in saved)
