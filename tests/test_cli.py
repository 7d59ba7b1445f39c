"""The ``framecast`` command through its real entry point (a subprocess running the console script)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMECAST = Path(sys.executable).with_name("framecast")


def run(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([str(FRAMECAST), *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


TINY = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--data.init_args.train_size", "24",
        "--data.init_args.val_size", "8", "--data.init_args.test_size", "8", "--data.init_args.batch_size", "4",
        "--model.hidden", "[8]", "--trainer.enable_progress_bar", "false"]


def test_help():
    out = run("--help")
    assert out.returncode == 0
    for word in ("fit", "validate", "test", "predict", "prepare", "visualize", "benchmark", "speed", "quickstart"):
        assert word in out.stdout
    out = run("fit", "--help")
    assert out.returncode == 0 and "--model.hidden" in out.stdout and "--trainer.max_epochs" in out.stdout


def test_unknown_command():
    out = run("fitt")
    assert out.returncode == 2 and "unknown command 'fitt'" in out.stderr


def test_fit_tiny_config_writes_checkpoint_and_comparison(tmp_path):
    # runs from a folder that is not the repository: the quickstart config must still be found
    out = run("fit", *TINY, "--trainer.default_root_dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "quickstart" in out.stdout
    ckpts = list((tmp_path / "run").rglob("last.ckpt"))
    pngs = list((tmp_path / "run").rglob("comparison.png"))
    assert len(ckpts) == 1 and len(pngs) == 1
    assert pngs[0].parent == ckpts[0].parent
    assert str(pngs[0]) in out.stdout
    assert "validation mse_frame" in out.stdout and "copy-last" in out.stdout

    # the checkpoint evaluates through `framecast validate`
    out = run("validate", "--config", str(ROOT / "configs" / "quickstart.yaml"), *TINY[6:],
              "--trainer.default_root_dir", str(tmp_path / "val"), "--ckpt_path", str(ckpts[0]), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "val/mse_frame" in out.stdout


def test_unknown_config_key_fails_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "quickstart.yaml").read_text().replace("  kernel_size: 5", "  kernel_sise: 5"))
    out = run("fit", "--config", str(bad), cwd=tmp_path)
    assert out.returncode != 0
    assert "kernel_sise" in out.stderr


@pytest.mark.parametrize("key,value,needle", [("--model.model", "convlsm", "convlsm"), ("--model.loss", "mse+fancy", "fancy")])
def test_bad_values_fail_clearly(tmp_path, key, value, needle):
    out = run("fit", *TINY, key, value, "--trainer.default_root_dir", str(tmp_path), cwd=tmp_path)
    assert out.returncode != 0
    assert needle in out.stderr
