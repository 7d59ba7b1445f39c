"""``framecast codelength``: the prequential code of the training stream.

Known answers (a fixed distribution: the hand-computed sum; block 0 at exactly 8 bits per sub-pixel; totals
the sum of the blocks), a decodable code (the bits of frame t do not depend on later frames), no peeking
(instrumented: nothing that codes block k ever read a clip of block k or later), the stream of videos
(non-overlapping clips in time order), bad input, and a tiny end-to-end run through the real entry point,
killed in its third block and rerun: it continues without retraining the first two."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from conftest import write_video
from framecast.cli import main
from framecast.models import build_model
from framecast.models.base import Rollout
from framecast.prequential import blocks, report
from framecast.prequential import stream as stream_mod
from framecast.prequential.coding import UNIFORM_BITS, NextFrameCoder, code_block, uniform_block
from framecast.prequential.stream import Stream, block_ends, build_stream, non_overlapping

FRAMECAST = Path(sys.executable).with_name("framecast")
TESTS = Path(__file__).resolve().parent

TINY = """
seed_everything: 0
trainer:
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
{callbacks}
model:
  model: convlstm
  hidden: [4]
  kernel_size: 3
  patch_size: 4
  lr: 0.003
data:
  class_path: framecast.data.MovingMNISTDataModule
  init_args: {{context_frames: 2, horizon_frames: 2, canvas: 32, train_size: 64, val_size: 4, test_size: 4,
              batch_size: 2}}
"""
PAUSE = "  callbacks:\n    - class_path: pause_callback.PauseAt"
# 4 blocks of 4 clips; batch 2, 1 epoch, 2 validations: fits of 2, 4 and 6 steps for blocks 1, 2, 3
RECIPE = ["--blocks", "4,4,4,4", "--epochs", "1", "--min-steps", "2", "--validations", "2"]


def tiny_config(tmp_path: Path, pause: bool = False) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(callbacks=PAUSE if pause else ""))
    return path


# --- blocks ----------------------------------------------------------------------------------------------


def test_block_ends():
    assert block_ends([4, 4, 8]) == [4, 8, 16]
    assert block_ends(first=8, growth=2, num_blocks=5) == [8, 16, 32, 64, 128]
    assert block_ends() == [8, 16, 32, 64, 128]
    assert block_ends(first=10, growth=1.5, num_blocks=4) == [10, 15, 22, 34]
    for bad in ({"blocks": [4]}, {"blocks": [4, 0]}, {"blocks": [1, 4]}, {"first": 4, "growth": 1.0},
                {"blocks": [4, 4], "first": 4}, {"first": 2, "growth": 1.2, "num_blocks": 4}):
        with pytest.raises(ValueError):
            block_ends(**bad)


def test_recipe_steps_proportional_with_a_cap():
    r = blocks.Recipe(epochs=2, min_steps=5, max_steps=100, validations=4, val_fraction=0.1, batch_size=4)
    assert r.steps(3) == (5, 1)  # the minimum
    assert r.steps(40) == (20, 5)  # 2 epochs x 40 clips / batch 4, validating every 5 steps
    assert r.steps(1000) == (100, 25)  # the cap
    r2 = blocks.Recipe(epochs=2, min_steps=5, max_steps=None, validations=4, val_fraction=0.1, batch_size=4,
                        processes=2)
    assert r2.steps(1000) == (248, 62)  # 2 x 1000 / (4 x 2) = 250, rounded down to a multiple of 250 // 4


# --- known answers -----------------------------------------------------------------------------------------

LOG2_510 = math.log2(510)


class FixedHead(nn.Module):
    """The same distribution for every sub-pixel: P(0) = 1/2, every other level 1/510."""

    def bits(self, params, x):
        levels = (x.double() * 255).round()
        return torch.where(levels == 0, torch.ones_like(levels), torch.full_like(levels, LOG2_510))


class FixedModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = FixedHead()

    def rollout(self, context, horizon):
        b, t, c, h, w = context.shape
        steps = t + horizon - 1
        return Rollout(frames=torch.zeros(b, steps, c, h, w), params=torch.zeros(b, steps, 1, h, w), horizon=horizon)


class Clips(Dataset):
    def __init__(self, frames: np.ndarray, context: int):
        self.frames, self.context = frames, context

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        x = torch.from_numpy(self.frames[i]).float().div(255)
        return {"context": x[: self.context], "target": x[self.context :]}


def synthetic_stream(n=14, t=4, size=6, seed=0) -> tuple[Stream, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, t, 1, size, size), dtype=np.uint8)
    frames[rng.random(frames.shape) < 0.6] = 0  # plenty of zeros, which the fixed distribution likes
    ds = Clips(frames, context=2)
    return Stream("test", "synthetic", ds, ds, channels=1, context_frames=2, horizon_frames=t - 2,
                  size=(size, size), length=n), frames


class FixedEntry:
    kind = "model"
    name = "fixed"

    def prepare(self, ctx, k, start):
        return NextFrameCoder(self.name, FixedModel()), {"train_clips": start, "val_clips": 0, "train_steps": 0,
                                                          "train_seconds": 0.0, "checkpoint": None}


def test_a_fixed_distribution_costs_the_hand_computed_sum(tmp_path):
    s, frames = synthetic_stream()
    ends = [4, 7, 14]
    ctx = blocks.Context(s, ends, tmp_path, batch_size=3, recipe=None, data={}, fit_options=[])
    records = blocks.run_blocks(ctx, [FixedEntry()])["fixed"]

    per_frame = 36
    expected = []
    for k, (a, b) in enumerate(zip([0] + ends, ends)):
        block = frames[a:b]
        if k == 0:
            expected.append(8.0 * block.size)
            continue
        rest = block[:, 1:]
        zeros = int((rest == 0).sum())
        expected.append(8.0 * len(block) * per_frame + zeros * 1.0 + (rest.size - zeros) * LOG2_510)
    assert [r["bits"] for r in records] == pytest.approx(expected, rel=1e-12)
    assert records[0]["bits_per_pixel"] == UNIFORM_BITS == 8.0
    assert records[0]["bits"] == 8.0 * 4 * 4 * per_frame  # exactly: 4 clips of 4 frames of 6x6
    assert [r["pixels"] for r in records] == [(b - a) * 4 * per_frame for a, b in zip([0] + ends, ends)]

    res = report.results({"data": "x", "description": "synthetic", "clips": 14, "frames_per_clip": 4,
                          "frame": [1, 6, 6], "blocks": [4, 3, 7], "ends": ends},
                         {"rule": "none"}, {"fixed": {"kind": "model", "codelength": "fixed", "blocks": records}},
                         "definition", ["framecast", "codelength"])
    total = res["predictors"]["fixed"]["total"]
    assert total["bits"] == pytest.approx(sum(expected), rel=1e-12)
    assert total["bits"] == sum(r["bits"] for r in records)
    assert total["pixels"] == frames.size and res["uniform"]["bits"] == 8.0 * frames.size
    paths = report.write(res, tmp_path / "report")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert json.loads(paths[0].read_text())["predictors"]["fixed"]["total"]["bits"] == pytest.approx(sum(expected))


def test_uniform_block_and_first_frames():
    code = uniform_block(clips=3, frames_per_clip=5, subpixels_per_frame=12)
    assert code.bits == 8.0 * 3 * 5 * 12 and code.bits_per_pixel == 8.0 and code.first_frame_bits == 8.0 * 3 * 12


@pytest.mark.parametrize("name", ["convlstm", "linear", "copy_last"])
def test_the_code_is_decodable_frame_by_frame(name):
    """The bits of frame t depend only on frames 1..t (a receiver decodes in order): changing frame m leaves
    the bits of every frame before it unchanged."""
    torch.manual_seed(0)
    if name == "convlstm":
        model = build_model(name, channels=1, hidden=[4], kernel_size=3, patch_size=2, head="logistic_mixture",
                            num_mixtures=2)
        scales = None
    else:
        model, scales = build_model(name), torch.full((5,), 0.1, dtype=torch.float64)
    coder = NextFrameCoder(name, model, scales=scales)
    clips = (torch.rand(2, 6, 1, 8, 8) * 255).round() / 255
    bits = coder.bits(clips)
    assert bits.shape == (2, 5, 1, 8, 8) and torch.isfinite(bits).all() and (bits >= 0).all()
    for m in (2, 4):
        changed = clips.clone()
        changed[:, m] = 1 - changed[:, m]
        other = coder.bits(changed)
        assert torch.equal(other[:, : m - 1], bits[:, : m - 1])  # frames 1..m (0-based 0..m-1) unchanged
        assert not torch.equal(other[:, m - 1], bits[:, m - 1])
    code = code_block(coder, [clips])
    assert code.bits == pytest.approx(8.0 * 2 * 64 + float(bits.sum()))


# --- no peeking --------------------------------------------------------------------------------------------


def test_nothing_that_codes_a_block_ever_saw_it(tmp_path, monkeypatch, capsys):
    log: list = []
    monkeypatch.setattr(stream_mod, "ACCESS_LOG", log)
    for cls in (blocks.ModelEntry, blocks.BaselineEntry):
        original = cls.prepare

        def prepare(self, ctx, k, start, _original=original):
            log.append((f"begin {self.name}", k))
            return _original(self, ctx, k, start)

        monkeypatch.setattr(cls, "prepare", prepare)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only contend
    try:
        code = main(["codelength", "--config", str(tiny_config(tmp_path)), "--blocks", "4,3,5", "--epochs", "1",
                     "--min-steps", "2", "--validations", "2", "--baselines", "copy_last", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err
    ends, starts = [4, 7, 12], [0, 4, 7]
    phase, seen_kinds, coded = None, set(), {}
    for purpose, value in log:
        if purpose.startswith("begin"):
            phase = (purpose.split()[1], value)
            continue
        name, k = phase
        if purpose == "code":  # coding block k reads exactly block k's clips
            assert starts[k] <= value < ends[k], (phase, value)
            coded.setdefault(phase, set()).add(value)
        else:  # training, validation and Laplace scales: only clips transmitted before block k
            assert value < starts[k], (phase, purpose, value)
            seen_kinds.add((name, purpose))
    assert {("convlstm", "train"), ("convlstm", "val"), ("convlstm", "scales"), ("copy_last", "scales")} <= seen_kinds
    for k in (1, 2):
        for name in ("convlstm", "copy_last"):
            assert coded[(name, k)] == set(range(starts[k], ends[k]))
        result = json.loads((out / "convlstm" / f"block_{k}" / "result.json").read_text())
        # the model that coded block k is the one trained in block k's own fit, on clips 0..start-1
        assert Path(result["checkpoint"]).parent == out / "convlstm" / f"block_{k}" / "checkpoints"
        assert result["train_clips"] + result["val_clips"] == starts[k]
        hp = torch.load(result["checkpoint"], weights_only=True)["datamodule_hyper_parameters"]
        assert hp["seen"] == starts[k] and hp["val_clips"] == result["val_clips"]


# --- the stream of videos ------------------------------------------------------------------------------------


def test_non_overlapping_windows_in_time_order():
    windows = [(1, 0), (0, 3), (0, 0), (0, 1), (0, 4), (1, 2), (0, 8), (1, 4)]
    kept = non_overlapping(windows, 4)
    assert [windows[i] for i in kept] == [(0, 0), (0, 4), (0, 8), (1, 0), (1, 4)]


def test_video_stream_is_every_frame_once_in_order(tmp_path):
    from framecast.data.video import VideoClipDataModule

    write_video(tmp_path / "v.mp4", 30, size=16)
    dm = VideoClipDataModule(videos=str(tmp_path / "v.mp4"), context_frames=2, horizon_frames=3, size=(16, 16),
                             split=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "cache"), augment={"hflip": True})
    s = build_stream(dm)
    assert s.kind == "video" and s.length == 6 and s.tag_epoch  # 30 frames: clips at 0, 5, ..., 25
    frames = np.load(dm.dataset("train").frame_files[0])
    for i in range(s.length):
        clip = (s.clip(i) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(clip, frames[5 * i : 5 * i + 5])  # the plain clip, never augmented


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra,words", [
    (["--blocks", "4,4", "--first", "4"], "not both"),
    (["--blocks", "1,4"], "at least 2 clips"),
    (["--predictors", "copy_last"], "--baselines"),
    (["--predictors", "nosuchmodel"], "--predictors"),
    (["--baselines", "nosuch"], "--baselines"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--ckpt_path", "x.ckpt"], "--ckpt_path"),
])
def test_bad_input_is_named(tmp_path, capsys, extra, words):
    code = main(["codelength", "--config", str(tiny_config(tmp_path)), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err and "Traceback" not in err


def test_a_sigterm_is_an_interruption_not_a_success(tmp_path, capsys, monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import framecast.cli

    def stopped(argv):
        raise SIGTERMException

    monkeypatch.setattr(framecast.cli, "run_lightning", stopped)
    out = tmp_path / "o"
    code = main(["codelength", "--config", str(tiny_config(tmp_path)), "--blocks", "4,4", "--out", str(out)])
    assert code == 143 and "rerun the same command" in capsys.readouterr().err
    assert not (out / "convlstm" / "block_1" / "result.json").exists()


def test_needs_config_and_out(tmp_path, capsys):
    assert main(["codelength", "--out", str(tmp_path)]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["codelength", "--config", str(tiny_config(tmp_path))]) == 2
    assert "--out" in capsys.readouterr().err


# --- end to end: the real entry point, killed and rerun ------------------------------------------------------


def run_framecast(args, pause_at=None, marker=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.pop("FRAMECAST_TEST_PAUSE_AT_STEP", None)
    if pause_at is not None:
        env.update(FRAMECAST_TEST_PAUSE_AT_STEP=str(pause_at), FRAMECAST_TEST_PAUSE_MARKER=str(marker))
    return subprocess.Popen([str(FRAMECAST), "codelength", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_end_to_end_killed_after_two_blocks_continues(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "paused"
    args = ["--config", str(tiny_config(tmp_path, pause=True)), *RECIPE, "--baselines", "copy_last", "--out", str(out)]
    # block 3 trains 6 steps; blocks 1 and 2 never reach step 5: the run pauses in block 3's fit
    proc = run_framecast(args, pause_at=5, marker=marker)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the run never reached block 3"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    first_out = proc.communicate(timeout=30)[0]
    def checkpoints(k):  # the fit's files: the best checkpoint and last.ckpt
        return {p.name: p.stat().st_mtime_ns for p in (out / "convlstm" / f"block_{k}" / "checkpoints").glob("*.ckpt")}

    done = {k: checkpoints(k) for k in (1, 2)}
    assert (out / "convlstm" / "block_2" / "result.json").is_file()
    assert not (out / "convlstm" / "block_3" / "result.json").exists()
    partial = json.loads((out / "codelength.json").read_text())  # written after every block
    assert len(partial["predictors"]["convlstm"]["blocks"]) == 3, first_out[-3000:]

    proc = run_framecast(args)
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text[-4000:]
    assert "block 1 (convlstm): done earlier" in text and "block 2 (convlstm): done earlier" in text
    assert "training convlstm" in text and "--- block 1" not in text and "--- block 2" not in text
    assert "resuming from" in text  # block 3's fit continues from its last checkpoint
    for k, files in done.items():  # not retrained
        assert len(files) == 2 and "last.ckpt" in files and checkpoints(k) == files
    for name in report.FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    res = json.loads((out / "codelength.json").read_text())
    for name in ("convlstm", "copy_last"):
        blocks = res["predictors"][name]["blocks"]
        assert [b["block"] for b in blocks] == [0, 1, 2, 3]
        assert blocks[0]["bits_per_pixel"] == 8.0
        assert res["predictors"][name]["total"]["bits"] == pytest.approx(sum(b["bits"] for b in blocks))
    model_blocks = res["predictors"]["convlstm"]["blocks"]
    assert [b["train_steps"] for b in model_blocks] == [0, 2, 4, 6]
    for b in model_blocks[1:]:  # the best of the validations (every 1, 2, 3 steps) coded the block
        assert b["best_step"] in range(b["train_steps"] // 2, b["train_steps"] + 1, b["train_steps"] // 2)
        assert Path(b["checkpoint"]).name == f"step={b['best_step']:06d}.ckpt"
    assert set(res["ranking"]) == {"convlstm", "copy_last"}
    assert "ranking by total codelength" in text and "| rank | predictor |" in (out / "codelength.md").read_text()
