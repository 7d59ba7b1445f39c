"""The video path through the real entry point: ``framecast prepare`` and ``framecast fit`` on a real video."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMECAST = Path(sys.executable).with_name("framecast")


def run(*args, cwd, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run([str(FRAMECAST), *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_prepare_then_fit_video_config_on_a_real_video(videos_dir, tmp_path):
    video = videos_dir / "intel_one-by-one-person-detection.mp4"
    cache = tmp_path / "cache"
    out = run("prepare", str(video), "--fps", "8", "--size", "64", "64", "--cache-dir", str(cache), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cached" in out.stdout and str(video.resolve()) in out.stdout  # (prepare names the resolved path)
    written = list(cache.glob("*.npy"))
    assert len(written) == 1 and str(written[0]) in out.stdout

    # the same through the grammar: the video config's decoding settings (8 fps, 64x64) find it in the cache
    out = run("prepare", "--config", str(ROOT / "configs" / "video_convlstm.yaml"), "--data.init_args.videos",
              str(video), "--data.init_args.cache_dir", str(cache), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"skipped  {video.resolve()} -> {written[0]}" in out.stdout and "(already cached)" in out.stdout

    out = run("fit", "--config", str(ROOT / "configs" / "video_convlstm.yaml"),
              "--data.init_args.videos", str(video), "--data.init_args.cache_dir", str(cache),
              "--data.init_args.stride_seconds", "0.5", "--data.init_args.batch_size", "2",
              "--model.hidden", "[8]", "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((tmp_path / "run").rglob("last.ckpt"))
    assert list((tmp_path / "run").rglob("comparison.png"))
    assert "validation mse_frame" in out.stdout
    assert list(cache.glob("*.npy")) == written  # the fit read the cache prepared above, wrote nothing new
