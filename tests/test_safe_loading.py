"""Checkpoints hold only tensors and plain data, and every load is ``weights_only``: a checkpoint carrying a
pickled object that would run code is refused, naming the file, and its payload never runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from framecast.checkpoints import UnsafeCheckpointError
from framecast.cli import main
from framecast.loading import load_module

ARGS = ["--data.class_path", "framecast.data.MovingMNISTDataModule", "--data.init_args.context_frames", "2",
        "--data.init_args.horizon_frames", "2", "--data.init_args.canvas", "32", "--data.init_args.train_size", "8",
        "--data.init_args.val_size", "4", "--data.init_args.test_size", "4", "--data.init_args.batch_size", "4",
        "--model.hidden", "[8]", "--model.kernel_size", "3", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class Payload:
    """Unpickling this calls ``os.makedirs(marker)``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint written by ``framecast fit`` with a cosine schedule and scheduled sampling (every kind
    of state Lightning saves: hyper-parameters, data module args, loops, callbacks, optimizer, scheduler)."""
    root = tmp_path_factory.mktemp("fit")
    main(["fit", *ARGS, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root),
          "--model.lr_schedule", "cosine", "--model.warmup_steps", "1", "--model.teacher_forcing", "scheduled_sampling"])
    (last,) = root.rglob("last.ckpt")
    return last


def test_framecast_checkpoints_hold_only_plain_data(trained):
    ckpt = torch.load(trained, weights_only=True)  # would raise on anything but tensors and plain data
    for key in ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "loops", "callbacks",
                "optimizer_states", "lr_schedulers"):
        assert key in ckpt, key
    assert ckpt["datamodule_hyper_parameters"]["canvas"] == 32
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the resumable loader's position


def evil_copy(trained: Path, tmp_path: Path, marker: Path) -> Path:
    ckpt = torch.load(trained, weights_only=True)
    ckpt["hyper_parameters"]["note"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    return path


def test_the_payload_is_real(trained, tmp_path):
    marker = tmp_path / "control"
    torch.load(evil_copy(trained, tmp_path, marker), weights_only=False)  # what an unsafe loader would do
    assert marker.exists()


def test_load_module_refuses_code(trained, tmp_path):
    marker = tmp_path / "ran"
    evil = evil_copy(trained, tmp_path, marker)
    with pytest.raises(UnsafeCheckpointError, match=f"refused to load checkpoint {evil}.*could run code"):
        load_module(evil)
    assert not marker.exists()
    assert load_module(trained).hparams.hidden == [8]  # a framecast checkpoint loads


@pytest.mark.parametrize("command,early", [("validate", True), ("validate", False), ("fit", False)])
def test_ckpt_path_refuses_code_even_when_asked_not_to(trained, tmp_path, monkeypatch, capsys, command, early):
    if not early:  # skip the CLI's first look at the hyper-parameters: the trainer's own load must refuse too
        monkeypatch.setattr("lightning.pytorch.cli.LightningCLI._parse_ckpt_path", lambda self: None)
    marker = tmp_path / "ran"
    evil = evil_copy(trained, tmp_path, marker)
    code = main([command, *ARGS, "--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--ckpt_path", str(evil), "--weights_only", "false"])
    out = capsys.readouterr()
    assert code == 2  # bad input: one message naming the file, no traceback
    assert f"framecast {command}: error: refused to load checkpoint {evil}" in out.err
    assert "Traceback" not in out.out + out.err
    assert not marker.exists()


def test_unsafe_checkpoint_traceback_with_debug(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRAMECAST_DEBUG", "1")
    evil = evil_copy(trained, tmp_path, tmp_path / "ran")
    assert main(["validate", *ARGS, "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnsafeCheckpointError" in err and "refused to load checkpoint" in err
    assert not (tmp_path / "ran").exists()
