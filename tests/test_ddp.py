"""Multi-process training: ``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu`` trains on
exactly the clips of one process with twice the batch (so it reaches the same weights), splits clips across
processes without duplicates, and reduces the validation metrics across processes; ``framecast benchmark``
with the same flags reports the numbers of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framecast.cli import main
from framecast.data.samplers import EpochSampler, EpochShuffleSampler, EvalSampler

FRAMECAST = Path(sys.executable).with_name("framecast")

# 12 training sequences, batch 4: 3 steps are one epoch, which ends with a validation on 8 fixed clips
CONFIG = """
seed_everything: 0
trainer:
  max_steps: 3
  accelerator: cpu
  precision: 32  # float32: the two runs agree to float32 rounding
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
model:
  model: convlstm
  hidden: [8]
  kernel_size: 3
  patch_size: 4
  lr: 0.003
data:
  class_path: framecast.data.MovingMNISTDataModule
  init_args: {context_frames: 3, horizon_frames: 2, canvas: 32, train_size: 12, val_size: 8, test_size: 8,
              batch_size: 4}
"""


def framecast(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    out = subprocess.run([str(FRAMECAST), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    return out


def val_metrics(root: Path) -> dict[str, float]:
    """The validation scalars of the run's TensorBoard log (the default logger)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (path,) = {p.parent for p in root.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(path))
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("val/")]
    assert tags and all(len(events.Scalars(t)) == 1 for t in tags)
    return {t: events.Scalars(t)[0].value for t in tags}


def test_two_processes_with_batch_b_train_like_one_with_batch_2b(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # 5 validation clips: process 0 gets 3 (2 batches of 2), process 1 gets 2 (1 batch), none twice
    try:
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "one"),
              "--data.init_args.val_size", "5"])
    finally:
        torch.set_num_threads(threads)
    framecast("fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "two"),
              "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.init_args.batch_size", "2",
              "--data.init_args.val_size", "5", cwd=tmp_path)
    (one,) = (tmp_path / "one").rglob("last.ckpt")
    (two,) = (tmp_path / "two").rglob("last.ckpt")
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert a["global_step"] == b["global_step"] == 3
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # the validation at the end of the epoch: the processes' sums are added, so the means are those of 5 clips
    m1, m2 = val_metrics(tmp_path / "one"), val_metrics(tmp_path / "two")
    assert m1.keys() == m2.keys() and "val/mse_frame_t2" in m1
    for k in m1:
        assert m2[k] == pytest.approx(m1[k], rel=1e-5), k


@pytest.mark.slow
def test_validate_with_two_processes_matches_one(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "fit")])
    (ckpt,) = (tmp_path / "fit").rglob("last.ckpt")
    outs = []
    for extra in ([], ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.init_args.batch_size", "2"]):
        outs.append(framecast("validate", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.default_root_dir",
                              str(tmp_path / f"val{len(outs)}"), "--data.init_args.val_size", "7", *extra,
                              cwd=tmp_path).stdout)

    def table(text):
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.strip().startswith("val/") and len(line.split()) == 2}

    one, two = table(outs[0]), table(outs[1])
    assert "val/mse_frame" in one and one.keys() == two.keys()
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5), k


@pytest.mark.parametrize("make", [lambda **kw: EpochSampler(10, **kw),
                                  lambda **kw: EpochShuffleSampler(10, seed=4, tag_epoch=True, **kw)])
def test_samplers_split_each_epoch_across_processes_without_duplicates(make):
    single = make(num_replicas=1, rank=0)
    for epoch in (0, 1):
        single.set_epoch(epoch)
        order = list(single)
        shards = []
        for rank in (0, 1):
            s = make(num_replicas=2, rank=rank)
            s.set_epoch(epoch)
            shards.append(list(s))
        assert len(shards[0]) == len(shards[1]) == 5
        assert sorted(shards[0] + shards[1]) == sorted(order)  # every clip once, on one process
        # batch k of 2 per process == batch k of 4 of one process
        for k in range(2):
            assert sorted(shards[0][2 * k : 2 * k + 2] + shards[1][2 * k : 2 * k + 2]) == sorted(order[4 * k : 4 * k + 4])
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first  # a new epoch, new clips or a new order
    odd = [list(make(num_replicas=3, rank=r)) for r in range(3)]  # 10 over 3: padded to equal lengths
    assert {len(o) for o in odd} == {4} and set(np.concatenate(odd)) == set(first)


def test_eval_sampler_gives_every_clip_to_exactly_one_process():
    for n, world in ((7, 2), (10, 3), (3, 3), (0, 2)):
        shards = [list(EvalSampler(n, num_replicas=world, rank=r)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert [len(EvalSampler(n, num_replicas=world, rank=r)) for r in range(world)] == [len(s) for s in shards]
    assert list(EvalSampler(5)) == [0, 1, 2, 3, 4]  # one process: all, in order
    with pytest.raises(ValueError, match="the val split has 1 clip for 2 processes"):
        EvalSampler(1, num_replicas=2, rank=0)


def test_benchmark_with_two_processes_reports_the_numbers_of_one(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "fit")])
    (ckpt,) = (tmp_path / "fit").rglob("last.ckpt")
    # 7 test and 5 validation clips: odd, so a split that padded or dropped clips would show in the counts
    common = ["benchmark", "--ckpt_path", str(ckpt), "--config", str(config), "--no-progress", "--lpips", "off",
              "--data.init_args.test_size", "7", "--data.init_args.val_size", "5"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    out = framecast(*common, "--out", str(tmp_path / "two"), "--trainer.strategy", "ddp", "--trainer.devices", "2",
                    "--trainer.accelerator", "cpu", cwd=tmp_path)
    assert out.stdout.count("wrote") == 4  # the first process writes, the second stays quiet
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert two["processes"] == 2 and "processes" not in one
    assert one["data"]["clips"] == two["data"]["clips"] == 7
    assert one["data"]["fit_clips"] == two["data"]["fit_clips"] == 5
    assert [p["name"] for p in one["predictors"]] == [p["name"] for p in two["predictors"]]
    for p, q in zip(one["predictors"], two["predictors"]):
        if p["laplace_scales"] is not None:
            assert q["laplace_scales"] == pytest.approx(p["laplace_scales"], rel=1e-6), p["name"]
        for name, m in p["metrics"].items():
            assert m["available"] == q["metrics"][name]["available"], (p["name"], name)
            if m["available"]:
                assert q["metrics"][name]["per_step"] == pytest.approx(m["per_step"], rel=1e-6), (p["name"], name)
    # --clips on data read from a file (not shrunk to 3 clips first): the first 3 clips, each on one process
    seq = tmp_path / "seq.npy"
    np.save(seq, np.random.default_rng(0).integers(0, 256, (5, 70, 32, 32), dtype=np.uint8))  # 7 test clips
    three = [*common, "--data.init_args.path", str(seq), "--baselines", "copy_last", "--clips", "3", "--metrics",
             "mse_frame,psnr"]
    assert main([*three, "--out", str(tmp_path / "three1")]) == 0
    framecast(*three, "--out", str(tmp_path / "three2"), "--trainer.strategy", "ddp", "--trainer.devices", "2",
              "--trainer.accelerator", "cpu", cwd=tmp_path)
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("three1", "three2"))
    assert one["data"]["clips"] == two["data"]["clips"] == 3
    for p, q in zip(one["predictors"], two["predictors"]):
        for name, m in p["metrics"].items():
            assert q["metrics"][name]["per_step"] == pytest.approx(m["per_step"], rel=1e-6), (p["name"], name)


def test_benchmark_refuses_fewer_clips_than_processes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    out = subprocess.run([str(FRAMECAST), "benchmark", "--baselines", "copy_last", "--config", str(config),
                          "--metrics", "mse_frame", "--clips", "1", "--out", str(tmp_path / "x"), "--no-progress",
                          "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert out.returncode == 2, (out.stdout[-3000:], out.stderr[-3000:])
    assert "--clips 1: fewer clips than the 2 processes" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


def test_benchmark_refuses_device_with_trainer_flags(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    assert main(["benchmark", "--baselines", "copy_last", "--config", str(config), "--out", str(tmp_path / "x"),
                 "--device", "cpu", "--trainer.devices", "2"]) == 2
    err = capsys.readouterr().err
    assert "--device cannot be combined with --trainer.devices" in err and not (tmp_path / "x").exists()


def test_benchmark_names_a_bad_trainer_option(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    assert main(["benchmark", "--baselines", "copy_last", "--config", str(config), "--out", str(tmp_path / "x"),
                 "--trainer.accelerator", "cpu", "--trainer.devices", "many"]) == 2
    err = capsys.readouterr().err
    assert "--trainer.* options (--trainer.devices many, --trainer.accelerator cpu)" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
