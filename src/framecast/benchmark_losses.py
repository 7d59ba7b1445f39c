"""``framecast benchmark-losses``: train the same model on the same data once per loss, then benchmark them.

    framecast benchmark-losses --config FILE --losses mse,l1,gdl,ssim,bits --max-steps N --out DIR
                               [--baselines copy_last,linear] [--clips N] [--seed S] [--KEY VALUE ...]

Each loss (a name or an equally weighted mix such as ``mse+gdl``) gets one ``framecast fit`` of the config
with ``--model.loss LOSS --trainer.max_steps N --trainer.max_epochs -1 --seed_everything S`` (and
``--model.head logistic_mixture`` when the loss contains ``bits``, which needs a per-pixel distribution),
its logs and checkpoints in ``DIR/<loss>/``. Then the last checkpoint of every run and the baselines are
benchmarked side by side on the same test clips (:mod:`framecast.benchmark`): ``DIR/results.md``,
``results.csv``, ``results.json`` and ``curves.png``. Options this command does not know (for example
``--model.hidden [16,16]`` or ``--data.init_args.train_size 960``) go to every ``fit``; the ``--data.*``
ones also to the benchmark's data.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from framecast.benchmark import (
    BenchmarkError,
    add_common_arguments,
    baseline_names,
    build_datamodule,
    default_device,
    load_predictors,
    print_written,
    run,
    split_data_overrides,
)
from framecast.losses import parse_loss

DEFAULT_LOSSES = "mse,l1,gdl,ssim,bits"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="framecast benchmark-losses",
        allow_abbrev=False,
        description="Train the config's model once per loss (same data, same seed), then benchmark all of them "
                    "and the baselines on the same test clips.",
        epilog="Any other --key value option (Lightning CLI syntax, e.g. --model.hidden [16,16] or "
               "--data.init_args.train_size 960) is passed to every fit; --data.* options also to the benchmark.",
    )
    p.add_argument("--config", required=True, help="a framecast fit YAML config (model, data, trainer)")
    p.add_argument("--losses", default=DEFAULT_LOSSES,
                   help=f"comma-separated losses, each a name or a mix like mse+gdl (default {DEFAULT_LOSSES})")
    p.add_argument("--max-steps", type=int, required=True, help="training steps per loss")
    add_common_arguments(p)
    return p


def run_dir_name(loss: str) -> str:
    return loss.replace("/", "_").replace(" ", "")


def fit_argv(config: str, loss: str, max_steps: int, seed: int, run_dir: Path, extra: list[str]) -> list[str]:
    """The ``framecast fit`` arguments of one loss's run."""
    argv = ["fit", "--config", str(config), "--model.loss", loss,
            "--trainer.max_steps", str(max_steps), "--trainer.max_epochs", "-1",
            "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(run_dir), "--checkpoint.dirpath", str(run_dir / "checkpoints")]
    if "bits" in parse_loss(loss):
        argv += ["--model.head", "logistic_mixture"]
    return argv + extra


def train(config: str, losses: list[str], max_steps: int, seed: int, out: Path, extra: list[str]) -> dict[str, Path]:
    """One fit per loss; ``{loss: last checkpoint}``."""
    from framecast.cli import run_lightning

    checkpoints = {}
    for i, loss in enumerate(losses):
        run_dir = out / run_dir_name(loss)
        print(f"\n=== [{i + 1}/{len(losses)}] training with loss {loss} for {max_steps} steps -> {run_dir}", flush=True)
        run_lightning(fit_argv(config, loss, max_steps, seed, run_dir, extra))
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise BenchmarkError(f"the run with loss {loss} wrote no checkpoint {ckpt}")
        print(f"checkpoint for loss {loss}: {ckpt}", flush=True)
        checkpoints[loss] = ckpt
    return checkpoints


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args, extra = p.parse_known_args(argv)
    try:
        losses = [x.strip() for x in args.losses.split(",") if x.strip()]
        if not losses:
            raise BenchmarkError("--losses is empty")
        for loss in losses:
            try:
                parse_loss(loss)
            except ValueError as e:
                raise BenchmarkError(str(e)) from e
        if len(set(losses)) != len(losses):
            raise BenchmarkError(f"a loss is listed twice in {args.losses!r}")
        if args.max_steps < 1:
            raise BenchmarkError(f"--max-steps must be >= 1, got {args.max_steps}")
        if not Path(args.config).is_file():
            raise BenchmarkError(f"config {args.config} does not exist")
        bad = [a for a in extra if re.fullmatch(r"-[A-Za-z].*", a)]
        if bad:
            raise BenchmarkError(f"unknown options {bad}")
        overrides, _ = split_data_overrides(extra)
        if args.batch_size is not None:
            overrides["batch_size"] = args.batch_size
        out = Path(args.out)
        checkpoints = train(args.config, losses, args.max_steps, args.seed, out, extra)
        device = args.device or default_device()
        entries = load_predictors([(loss, path) for loss, path in checkpoints.items()],
                                  baseline_names(args.baselines), device)
        dm = build_datamodule(args.config, None, entries, overrides)
        print(f"\n=== benchmarking {len(entries)} predictors -> {out}", flush=True)
        results, paths = run(entries, dm, out, clips=args.clips, fit_clips=args.fit_clips, split=args.split,
                             seed=args.seed, device=device, lpips=args.lpips == "auto",
                             command="framecast benchmark-losses " + " ".join(argv),
                             progress=not args.no_progress)
    except BenchmarkError as e:
        print(f"framecast benchmark-losses: error: {e}", file=sys.stderr)
        return 2
    for loss, ckpt in checkpoints.items():
        print(f"wrote {ckpt} (loss {loss})")
    print_written(results, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
