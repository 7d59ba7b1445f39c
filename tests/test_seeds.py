"""Several seeds of one candidate: the mean, the sample standard deviation and the tie rule on hand-made
per-seed results (known answers), then ``framecast benchmark-losses --seeds`` end to end through the real CLI
(one checkpoint per seed, one report over the seeds, a rerun that trains nothing) and bad ``--seeds``."""

import contextlib
import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch

from framecast.cli import main
from framecast.evaluation.seeds import TIE_RULE, aggregate, mean_std, pm, seed_groups, ties

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TINY_DATA = ["--data.init_args.canvas", "32", "--data.init_args.context_frames", "3",
             "--data.init_args.horizon_frames", "2", "--data.init_args.train_size", "8", "--data.init_args.val_size", "4",
             "--data.init_args.test_size", "4", "--data.init_args.batch_size", "4"]
TINY = ["--model.hidden", "[4]", "--model.kernel_size", "3", "--model.warmup_steps", "0",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
        "--trainer.limit_val_batches", "1", *TINY_DATA]


def predictor(name: str, kind: str, **metrics) -> dict:
    """A hand-made benchmark predictor: ``metric=[per-step values]`` (the mean is theirs), or None (unavailable)."""
    out = {}
    for m, steps in metrics.items():
        out[m] = ({"available": False, "reason": "not here"} if steps is None else
                  {"available": True, "mean": sum(steps) / len(steps), "per_step": steps})
    return {"name": name, "kind": kind, "metrics": out}


RESULTS = {
    "metrics": {"err": {"better": "lower"}, "score": {"better": "higher"}, "lp": {"better": "lower"}},
    "predictors": [
        predictor("a #1", "checkpoint", err=[1.0, 1.0], score=[9.0, 9.0], lp=[0.5, 0.5]),
        predictor("a #2", "checkpoint", err=[2.0, 2.0], score=[9.0, 10.0], lp=[0.5, 0.5]),
        predictor("a #3", "checkpoint", err=[3.0, 3.0], score=[10.0, 11.0], lp=[0.5, 0.5]),
        predictor("b #1", "checkpoint", err=[2.4, 2.0], score=[7.0, 7.0], lp=None),
        predictor("b #2", "checkpoint", err=[3.0, 3.4], score=[7.0, 7.0], lp=[0.5, 0.5]),
        predictor("copy_last", "baseline", err=[3.5, 3.5], score=[10.0, 10.0], lp=[0.6, 0.6]),
    ],
}
GROUPS = {"a": ["a #1", "a #2", "a #3"], "b": ["b #1", "b #2"]}


def test_aggregate_mean_sample_std_and_ties():
    cands = {c["name"]: c for c in aggregate(RESULTS, GROUPS)}
    assert list(cands) == ["a", "b", "copy_last"]
    assert [cands[n]["seeds"] for n in cands] == [3, 2, 1]
    a, b, base = (cands[n]["metrics"] for n in ("a", "b", "copy_last"))
    # a.err: seeds 1, 2, 3 -> mean 2, sample std sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1
    assert a["err"]["mean"] == pytest.approx(2.0) and a["err"]["std"] == pytest.approx(1.0)
    # b.err: seeds 2.2, 3.2 -> mean 2.7, std |3.2-2.2| / sqrt(2); per step 2.4, 3.0 and 2.0, 3.4
    assert b["err"]["mean"] == pytest.approx(2.7) and b["err"]["std"] == pytest.approx(1 / math.sqrt(2))
    assert b["err"]["per_step"] == pytest.approx([2.7, 2.7])
    assert b["err"]["per_step_std"] == pytest.approx([0.6 / math.sqrt(2), 1.4 / math.sqrt(2)])
    assert a["score"]["mean"] == pytest.approx(29 / 3) and a["score"]["std"] == pytest.approx(math.sqrt(7 / 12))
    assert base["err"]["mean"] == 3.5 and base["err"]["std"] is None  # one member: no spread
    assert b["lp"] == {"available": False, "reason": "not here"}  # one seed lacks it: the candidate lacks it
    # err: best a (2 ± 1); b differs by 0.7 < max(0.707, 1): a tie; copy_last by 1.5: not
    assert ties(list(cands.values()), "err", "lower") == {"a", "b"}
    # score (higher): best copy_last 10 (spread 0); a differs by 1/3 < its std 0.76: a tie; b by 3: not
    assert ties(list(cands.values()), "score", "higher") == {"copy_last", "a"}
    # lp: b unavailable; a 0.5 ± 0 beats copy_last 0.6
    assert ties(list(cands.values()), "lp", "lower") == {"a"}
    # per step 1 of err: a 2 ± 1, b 2.7 ± 0.42, copy_last 3.5 -> a, b
    assert ties(list(cands.values()), "err", "lower", step=0) == {"a", "b"}


def test_tie_rule_is_strict_and_uses_the_larger_spread():
    def cand(name, mean, std):
        return {"name": name, "metrics": {"m": {"available": True, "mean": mean, "std": std}}}

    # differences equal to the spread are not ties; the best's spread counts as much as the other's
    assert ties([cand("x", 1.0, 0.5), cand("y", 1.5, 0.1)], "m", "lower") == {"x"}
    assert ties([cand("x", 1.0, 0.5), cand("y", 1.49, 0.1)], "m", "lower") == {"x", "y"}
    assert ties([cand("x", 1.0, 0.0), cand("y", 1.49, 0.5)], "m", "lower") == {"x", "y"}
    assert ties([cand("x", 1.0, None), cand("y", 1.0, None)], "m", "lower") == {"x", "y"}  # equal means
    assert ties([cand("x", math.inf, None)], "m", "lower") == set()
    assert mean_std([4.0]) == (4.0, None)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert math.isnan(mean_std([1.0, math.inf])[1])


def test_seed_groups_and_the_printed_numbers():
    ckpts = [("mse", Path("s0.ckpt")), (None, Path("x.ckpt")), ("mse", Path("s1.ckpt")), ("l1", Path("l.ckpt"))]
    named, groups = seed_groups(ckpts)
    assert named == [("mse #1", Path("s0.ckpt")), (None, Path("x.ckpt")), ("mse #2", Path("s1.ckpt")),
                     ("l1", Path("l.ckpt"))]
    assert groups == {"mse": ["mse #1", "mse #2"]}
    assert pm(211.3127, 4.237) == "211.3 ± 4.2"
    assert pm(0.95812, 0.00123) == "0.9581 ± 0.0012"
    assert pm(35.16, 12.0) == "35 ± 12"
    assert pm(5.55, None) == "5.55"
    assert pm(5.55, 0.0) == "5.55 ± 0"


def losses_argv(out: Path, *extra: str) -> list[str]:
    return ["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse", "--max-steps", "2", "--seeds",
            "0,1", "--out", str(out), "--no-progress", "--baselines", "copy_last", "--metrics",
            "mse_frame,psnr,bits_per_pixel", *TINY, *extra]


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """``benchmark-losses --seeds 0,1`` of one loss on tiny moving digits, run once for this file."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("seeds") / "losses"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(losses_argv(out)) == 0
    return out, printed.getvalue()


def test_benchmark_groups_checkpoints_named_alike(tmp_path, capsys):
    """One checkpoint given as two seeds of ``a`` and as ``b``: a's mean is b's, its spread 0, both marked."""
    from framecast.cli import run_lightning

    torch.set_num_threads(1)
    run = tmp_path / "run"
    run_lightning(["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "1", *TINY,
                   "--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run / "checkpoints")])
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "bench"
    rc = main(["benchmark", "--no-progress", "--ckpt_path", f"a={ckpt}", f"a={ckpt}", f"b={ckpt}", "--baselines",
               "copy_last", "--metrics", "mse_frame,psnr", "--out", str(out), "--config", str(QUICKSTART), *TINY_DATA])
    assert rc == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in results["predictors"]] == ["a #1", "a #2", "b", "copy_last"]
    a, b, base = results["seeds"]
    assert (a["name"], a["seeds"], b["seeds"], base["seeds"]) == ("a", 2, 1, 1)
    for m in ("mse_frame", "psnr"):
        assert a["metrics"][m]["mean"] == pytest.approx(b["metrics"][m]["mean"], rel=1e-12)
        assert a["metrics"][m]["std"] == pytest.approx(0.0, abs=1e-9) and b["metrics"][m]["std"] is None
    md = (out / "results.md").read_text()
    assert md.index("## Mean ± standard deviation over seeds") < md.index("## Averaged")
    bold = {line.split("|")[1].strip() for line in md[:md.index("## Averaged")].splitlines()
            if line.startswith("| ") and line.split("|")[3].strip().startswith("**")}  # the mse_frame column
    copy_wins = base["metrics"]["mse_frame"]["mean"] < b["metrics"]["mse_frame"]["mean"]
    assert bold == ({"copy_last"} if copy_wins else {"a", "b"})  # a and b have one mean: tied
    assert "## Mean ± standard deviation over seeds" in printed and (out / "seeds.csv").is_file()


@pytest.mark.slow
def test_benchmark_losses_over_seeds_end_to_end(seeds_run):
    out, printed = seeds_run
    assert "each sets --seed_everything and --data.init_args.seed" in printed  # moving digits: eval clips fixed
    ckpts = [out / f"seed{s}" / "mse" / "checkpoints" / "last.ckpt" for s in (0, 1)]
    saved = [torch.load(p, map_location="cpu", weights_only=True) for p in ckpts]
    assert [s["datamodule_hyper_parameters"]["seed"] for s in saved] == [0, 1]
    first = next(iter(saved[0]["state_dict"]))
    assert not torch.equal(saved[0]["state_dict"][first], saved[1]["state_dict"][first])  # another init
    results = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in results["predictors"]] == ["mse #1", "mse #2", "copy_last"]
    assert [p["checkpoint"] for p in results["predictors"][:2]] == [str(p) for p in ckpts]
    mse, base = results["seeds"]
    assert (mse["name"], mse["seeds"], mse["members"]) == ("mse", 2, ["mse #1", "mse #2"])
    assert base["name"] == "copy_last" and base["seeds"] == 1
    for m in ("mse_frame", "psnr", "bits_per_pixel"):
        x, y = (float(p["metrics"][m]["mean"]) for p in results["predictors"][:2])
        assert mse["metrics"][m]["mean"] == pytest.approx((x + y) / 2)
        assert mse["metrics"][m]["std"] == pytest.approx(abs(x - y) / math.sqrt(2))
        assert base["metrics"][m]["std"] is None
    md = (out / "results.md").read_text()
    assert TIE_RULE in md
    row = next(line for line in md.splitlines() if line.startswith("| mse | 2 |"))
    r = mse["metrics"]["mse_frame"]
    assert pm(r["mean"], r["std"]) in row
    with (out / "seeds.csv").open() as f:
        rows = list(csv.DictReader(f))
    mean_row = next(r for r in rows if r["predictor"] == "mse" and r["step"] == "mean")
    assert float(mean_row["mse_frame"]) == mse["metrics"]["mse_frame"]["mean"]
    assert float(mean_row["mse_frame_std"]) == mse["metrics"]["mse_frame"]["std"]
    assert f"wrote {out / 'seeds.csv'}" in printed and (out / "curves.png").is_file()


@pytest.mark.slow
def test_a_rerun_trains_nothing(seeds_run, capsys):
    """A rerun keeps the finished runs and benchmarks the same checkpoints again: the same numbers."""
    out, _ = seeds_run
    ckpts = [out / f"seed{s}" / "mse" / "checkpoints" / "last.ckpt" for s in (0, 1)]
    before = json.loads((out / "results.json").read_text())["seeds"]
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    assert main(losses_argv(out)) == 0
    assert capsys.readouterr().out.count("already has 2 steps, kept") == 2
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    assert json.loads((out / "results.json").read_text())["seeds"] == before


@pytest.mark.parametrize("seeds, words", [
    ("0,x", r"--seeds: 'x' is not a non-negative integer"),
    ("0,-1", r"--seeds: '-1' is not a non-negative integer"),
    ("1,1", r"--seeds: a seed is listed twice"),
])
def test_bad_seeds_are_named(tmp_path, capsys, seeds, words):
    rc = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse", "--max-steps", "1",
               "--seeds", seeds, "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert re.search(words, err) and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing trained


def test_seeds_and_seed_everything_together_is_an_error(tmp_path, capsys):
    rc = main(["benchmark-losses", "--config", str(QUICKSTART), "--losses", "mse", "--max-steps", "1",
               "--seeds", "0,1", "--seed", "3", "--out", str(tmp_path)])
    assert rc == 2
    assert "give --seeds or --seed_everything" in capsys.readouterr().err


def test_a_data_seed_that_moves_the_evaluation_clips_is_not_varied(tmp_path):
    """Three videos are shuffled into splits by ``data.init_args.seed``: another seed would train on another
    split's clips, so only ``--seed_everything`` varies; one video is split by time, whatever the seed."""
    from conftest import write_video
    from framecast.benchmark_losses import data_seed_keeps_clips

    (tmp_path / "three").mkdir()
    for i, n in enumerate((20, 21, 22)):
        write_video(tmp_path / "three" / f"v{i}.mp4", n)
    data = ["--data.class_path", "framecast.data.VideoClipDataModule", "--data.init_args.context_frames", "2",
            "--data.init_args.horizon_frames", "2", "--data.init_args.size", "[16, 16]",
            "--data.init_args.cache_dir", str(tmp_path / "cache")]
    assert not data_seed_keeps_clips([*data, "--data.init_args.videos", str(tmp_path / "three")], [0, 1])
    one = write_video(tmp_path / "one.mp4", 120)
    assert data_seed_keeps_clips([*data, "--data.init_args.videos", str(one)], [0, 1])
