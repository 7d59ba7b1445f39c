"""Resuming after a crash: a ``framecast fit`` killed with SIGKILL mid-epoch and resumed with
``--ckpt_path last`` ends with exactly the weights (and optimizer, schedule, step) of a run that was never
interrupted; the training loaders restore their position mid-epoch, under DDP-style sharding too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import VIDEOS
from framecast.data import MovingMNISTDataModule
from framecast.data.samplers import EpochSampler, EpochShuffleSampler, ResumableDataLoader, set_sampler_epoch

FRAMECAST = Path(sys.executable).with_name("framecast")
TESTS = Path(__file__).resolve().parent

CONFIG = """
seed_everything: 0
trainer:
  max_steps: 24
  limit_val_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: pause_callback.PauseAt
checkpoint:
  every_n_train_steps: 4
model:
  model: convlstm
  hidden: [8]
  kernel_size: 3
  patch_size: 4
  lr: 0.003
  lr_schedule: cosine
  warmup_steps: 3
  teacher_forcing: scheduled_sampling
  teacher_forcing_options: {rate: 0.02}
data:
  class_path: framecast.data.MovingMNISTDataModule
  init_args: {context_frames: 3, horizon_frames: 3, canvas: 32, train_size: 64, val_size: 4, test_size: 4,
              batch_size: 4}
"""


def start(config: Path, root: Path, *extra: str, pause_at: int | None = None, marker: Path | None = None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    if pause_at is not None:
        env.update(FRAMECAST_TEST_PAUSE_AT_STEP=str(pause_at), FRAMECAST_TEST_PAUSE_MARKER=str(marker))
    args = [str(FRAMECAST), "fit", "--config", str(config), "--trainer.default_root_dir", str(root), *extra]
    return subprocess.Popen(args, cwd=root.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_killed_run_resumed_from_last_matches_an_uninterrupted_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    marker = tmp_path / "paused"
    # the run that will be killed, and (at the same time, 2 cores) the uninterrupted one
    killed = start(config, tmp_path / "b", pause_at=20, marker=marker)
    whole = start(config, tmp_path / "a")
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert killed.poll() is None, killed.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the run never reached step 20"
        time.sleep(0.1)
    last = tmp_path / "b" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 20 and saved["epoch"] == 1  # 16 batches per epoch: 4 into the second
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL
    assert marker.read_text() == "20 4"  # it was paused mid-epoch, before step 21

    out = finish(start(config, tmp_path / "b", "--ckpt_path", "last"))
    assert f"resuming from {last.resolve()}" in out
    finish(whole)

    resumed = torch.load(tmp_path / "b" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    reference = torch.load(tmp_path / "a" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 24
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for k, v in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][k], v), k
    opt_a, opt_b = reference["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    for i in opt_a:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[i][k], opt_b[i][k]), (i, k)
    assert reference["lr_schedulers"] == resumed["lr_schedulers"]


# --- the loaders themselves -------------------------------------------------------------------------------


def batches(loader, n=None):
    out = []
    for i, b in enumerate(loader):
        if n is not None and i >= n:
            break
        out.append(b["context"].clone())
    return out


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("epoch,done", [(0, 3), (2, 5)])
def test_moving_digits_loader_resumes_mid_epoch(epoch, done):
    def loader():
        dm = MovingMNISTDataModule(context_frames=2, horizon_frames=1, canvas=32, train_size=32, val_size=4,
                                   test_size=4, batch_size=4)
        dm.setup("fit")
        return dm.train_dataloader()

    first = loader()
    set_sampler_epoch(first, epoch)
    whole = batches(first)
    assert len(whole) == 8
    it = iter(first)
    for _ in range(done):
        next(it)
    state = {"epoch": epoch, "batches": done}
    resumed = loader()
    resumed.load_state_dict(state)
    assert same(batches(resumed), whole[done:])
    set_sampler_epoch(resumed, epoch + 1)  # the next epoch is whole again, and fresh
    following = batches(resumed)
    assert len(following) == 8 and not torch.equal(following[0], whole[0])


def test_state_saved_at_the_end_of_an_epoch_resumes_with_the_next_one():
    loader = ResumableDataLoader(list(range(12)), batch_size=4, sampler=EpochShuffleSampler(12, seed=3))
    set_sampler_epoch(loader, 1)
    expected = [b.tolist() for b in loader]
    fresh = ResumableDataLoader(list(range(12)), batch_size=4, sampler=EpochShuffleSampler(12, seed=3))
    fresh.load_state_dict({"epoch": 0, "batches": 3})
    assert [b.tolist() for b in fresh] == expected


def test_distributed_shards_skip_their_own_consumed_batches():
    # two "processes" (ranks) over the same epoch sampler, as Lightning wraps it under DDP
    def rank_loader(rank):
        return ResumableDataLoader(list(range(1000)), batch_size=4, sampler=EpochSampler(32, num_replicas=2, rank=rank))

    for rank in (0, 1):
        full = rank_loader(rank)
        set_sampler_epoch(full, 1)
        whole = [b.tolist() for b in full]
        assert [i for b in whole for i in b] == list(range(32 + rank, 64, 2))  # epoch 1, this rank's share
        resumed = rank_loader(rank)
        resumed.load_state_dict({"epoch": 1, "batches": 2})
        assert [b.tolist() for b in resumed] == whole[2:]


def test_resuming_on_another_number_of_processes_keeps_the_clips_trained_on():
    # 1 process with batch 4 took 3 batches (12 clips) of epoch 1; continue with 2 processes of batch 2
    one = ResumableDataLoader(list(range(1000)), batch_size=4, sampler=EpochSampler(32, num_replicas=1, rank=0))
    state = {"epoch": 1, "batches": 3, "step_clips": 4}
    set_sampler_epoch(one, 1)
    rest = sorted(i for b in list(one)[3:] for i in b.tolist())
    seen = []
    for rank in (0, 1):
        loader = ResumableDataLoader(list(range(1000)), batch_size=2, sampler=EpochSampler(32, num_replicas=2, rank=rank))
        loader.load_state_dict(state)
        seen += [i for b in loader for i in b.tolist()]
    assert sorted(seen) == rest


def test_video_training_order_and_augmentation_are_reproducible(tmp_path):
    if not VIDEOS.is_dir():
        pytest.skip(f"{VIDEOS} is absent")
    from framecast.data import VideoClipDataModule

    def loader():
        dm = VideoClipDataModule(str(VIDEOS / "mmaction2_test_xvid.avi"), fps=5, context_frames=2, horizon_frames=1,
                                 size=(16, 16), split=(1, 0, 0), batch_size=4, cache_dir=str(tmp_path / "cache"),
                                 augment={"hflip": True, "random_resized_crop": [0.5, 1.0], "time_reverse": True})
        dm.setup("fit")
        return dm.train_dataloader()

    a = loader()
    set_sampler_epoch(a, 1)
    torch.manual_seed(1)  # the global random state plays no part
    whole = batches(a)
    b = loader()
    b.load_state_dict({"epoch": 1, "batches": 3})
    torch.manual_seed(2)
    assert same(batches(b), whole[3:])
    set_sampler_epoch(b, 0)
    assert not same(batches(b), whole)  # another epoch: another order and other augmentations
